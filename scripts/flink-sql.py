"""Plans or runs a Freshet-generated Flink SQL script with Flink itself (PyPI apache-flink).

Usage (with a Python that has apache-flink: `scripts/bootstrap.sh --with-flink` puts one
at ~/.cache/freshet/tools/flink-venv/bin/python):

  flink-sql.py explain SCRIPT.sql...   plan the scripts with Flink's planner; prints
                                       `planned N inserts into N sinks; ...`
  flink-sql.py run SCRIPT.sql...       run them as one job on Flink's local mini-cluster
                                       until the input ends (bounded sources only, such as
                                       `freshet compile --connectors files`); prints
                                       `ran N inserts`

Scripts of several views of one source can go together: a CREATE TABLE repeated with the
same text (the source table) is run once.

Applies every statement before the EXECUTE STATEMENT SET (SET as configuration, CREATE
TABLE with `TableEnvironment.execute_sql`), then the inserts of the statement set as one job. Any
error from Flink's parser, validator, optimizer or runtime exits non-zero with its message.

`run` uses parallelism 1 and emits the watermark after every record that moves it
(`pipeline.auto-watermark-interval` 0): with one reader of one file, which records are late
is then decided by the file's order alone, as in Freshet's engine, not by when a periodic
timer happened to fire.
"""

import re
import sys


def statements(sql: str):
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    match = re.search(r"EXECUTE STATEMENT SET\s+BEGIN(.*)END;", body, re.S)
    if not match:
        raise SystemExit("no EXECUTE STATEMENT SET block in the script")
    ddl = [s.strip() for s in body[: match.start()].split(";") if s.strip()]
    inserts = [s.strip() for s in match.group(1).split(";") if s.strip()]
    return ddl, inserts


def environment(mode: str):
    from pyflink.common import Configuration
    from pyflink.table import EnvironmentSettings, TableEnvironment

    config = Configuration()
    if mode == "run":
        config.set_string("parallelism.default", "1")
        config.set_string("pipeline.auto-watermark-interval", "0 ms")
    settings = EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(config).build()
    return TableEnvironment.create(settings)


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[1] not in ("explain", "run"):
        raise SystemExit("usage: flink-sql.py explain|run SCRIPT.sql...")
    mode = sys.argv[1]
    ddl, inserts = [], []
    for path in sys.argv[2:]:
        script_ddl, script_inserts = statements(open(path, encoding="utf-8").read())
        ddl += [s for s in script_ddl if s not in ddl]
        inserts += script_inserts
    env = environment(mode)
    for statement in ddl:
        # SET is the SQL client's; a TableEnvironment takes it as configuration.
        setting = re.fullmatch(r"SET\s+'([^']+)'\s*=\s*'([^']*)'", statement, re.I)
        if setting:
            env.get_config().set(setting.group(1), setting.group(2))
        else:
            env.execute_sql(statement)
    statement_set = env.create_statement_set()
    for insert in inserts:
        statement_set.add_insert_sql(insert)
    if mode == "run":
        statement_set.execute().wait()
        print(f"ran {len(inserts)} inserts")
        return 0
    plan = statement_set.explain()
    # The last section is the optimized execution plan: one sink per insert, each fed by
    # a window aggregation (possibly split into local and global phases).
    execution = plan.split("== Optimized Execution Plan ==")[-1]
    sinks = len(set(re.findall(r"Sink\(table=\[([^\]]+)\]", execution)))
    windowed = "WindowAggregate" in execution
    print(f"planned {len(inserts)} inserts into {sinks} sinks; window aggregation: {str(windowed).lower()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

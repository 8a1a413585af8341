"""Plans a Freshet-generated Flink SQL script with Flink's own planner.

Usage: python flink_explain.py SCRIPT.sql

Runs every CREATE TABLE statement, adds every INSERT of the EXECUTE STATEMENT SET to one
statement set and asks the planner to explain it. Prints `planned N inserts` on success;
any error from Flink's parser, validator or optimizer exits non-zero with its message.
The script must use planner-check connectors (datagen/blackhole): the Kafka connector
jars are not installed where this runs.
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


def main() -> int:
    from pyflink.table import EnvironmentSettings, TableEnvironment

    sql = open(sys.argv[1], encoding="utf-8").read()
    ddl, inserts = statements(sql)
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    for statement in ddl:
        env.execute_sql(statement)
    statement_set = env.create_statement_set()
    for insert in inserts:
        statement_set.add_insert_sql(insert)
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

//! `freshet copilot generate|recommend|chat`: the LLM copilot (`freshet-copilot`) on the
//! command line.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use freshet_copilot::config::CopilotArgs;
use freshet_copilot::{Copilot, CopilotMetrics, Message, SchemaOrigin, NOT_CONFIGURED};
use futures::StreamExt;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

#[derive(Args)]
pub struct CopilotCmd {
    #[command(flatten)]
    llm: CopilotArgs,
    #[command(subcommand)]
    command: CopilotCommand,
}

#[derive(Subcommand)]
enum CopilotCommand {
    /// A feature view definition from a description in words, validated before it is
    /// shown; the TOML goes to stdout, the model's reasoning to stderr.
    Generate {
        /// What to compute, e.g. "count clicks and purchases per user in the last 10 minutes".
        description: String,
        /// The source the view reads (default: the only source).
        #[arg(long)]
        source: Option<String>,
        /// Take the source's fields from this schema registry (its latest schema) instead
        /// of the definitions' schema file. Credentials in the URL (https://KEY:SECRET@host)
        /// are sent as basic auth.
        #[arg(long, value_name = "URL")]
        registry_url: Option<String>,
        /// Save the definition as `{view}.toml` in the definitions folder.
        #[arg(long)]
        write: bool,
    },
    /// Ranked feature ideas for a use case, each a valid feature over the source's fields.
    Recommend {
        /// The use case, e.g. "CTR prediction for e-commerce".
        use_case: String,
        /// The source to build on (default: the only source).
        #[arg(long)]
        source: Option<String>,
        /// How many ideas.
        #[arg(long, default_value_t = 5)]
        count: usize,
        /// Print the ideas as JSON.
        #[arg(long)]
        json: bool,
    },
    /// An interactive assistant that knows the definition format, the views and the CLI;
    /// `/exit` (or end of input) leaves.
    Chat,
}

pub fn run(cmd: CopilotCmd, features_dir: &Path) -> Result<ExitCode> {
    let defs = freshet_core::load_dir(features_dir)?;
    let registry = prometheus::Registry::new();
    let copilot = Copilot::new(cmd.llm.into(), CopilotMetrics::new(&registry)?)?;
    if !copilot.is_configured() {
        bail!("{NOT_CONFIGURED}");
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match cmd.command {
        CopilotCommand::Generate {
            description,
            source,
            registry_url,
            write,
        } => {
            let origin = registry_url.map_or(SchemaOrigin::Definitions, |url| {
                SchemaOrigin::Registry(freshet_avro::Registry::new(url))
            });
            eprintln!(
                "copilot: asking {} at {} ...",
                copilot.config().model,
                copilot.config().base_url
            );
            let generated = runtime.block_on(copilot.generate(
                &defs,
                &description,
                source.as_deref(),
                &origin,
            ))?;
            if !generated.reasoning.is_empty() {
                eprintln!("copilot: {}", generated.reasoning);
            }
            eprintln!(
                "copilot: view `{}` is valid (answer {} of at most {})",
                generated.view,
                generated.attempts,
                copilot.config().max_repairs + 1
            );
            print!("{}", generated.toml);
            if write {
                let path = features_dir.join(freshet_copilot::generate::file_name(&generated.view));
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .with_context(|| {
                        format!(
                            "cannot write {} (does it exist already? remove it or ask for another name)",
                            path.display()
                        )
                    })?;
                file.write_all(generated.toml.as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                drop(file);
                if let Err(e) = freshet_core::load_dir(features_dir) {
                    let _ = std::fs::remove_file(&path);
                    bail!("the saved definition did not load, so it was removed again: {e}");
                }
                eprintln!("copilot: wrote {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        CopilotCommand::Recommend {
            use_case,
            source,
            count,
            json,
        } => {
            let recommendations =
                runtime.block_on(copilot.recommend(&defs, &use_case, source.as_deref(), count))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&recommendations)?);
                return Ok(ExitCode::SUCCESS);
            }
            for (rank, idea) in recommendations.ideas.iter().enumerate() {
                println!("{}. {}: {}", rank + 1, idea.name, idea.description);
                println!("   why: {}", idea.rationale);
                println!(
                    "   define it: freshet copilot generate {:?}",
                    idea.as_description()
                );
            }
            for (name, problem) in &recommendations.dropped {
                eprintln!("copilot: dropped `{name}`: {problem}");
            }
            Ok(ExitCode::SUCCESS)
        }
        CopilotCommand::Chat => runtime.block_on(chat(&copilot, &defs)),
    }
}

async fn chat(copilot: &Copilot, defs: &freshet_core::Definitions) -> Result<ExitCode> {
    eprintln!(
        "Freshet copilot ({} at {}). Ask about features, definitions or commands; /exit leaves.",
        copilot.config().model,
        copilot.config().base_url
    );
    let mut history: Vec<Message> = Vec::new();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        eprint!("you> ");
        let Some(line) = lines.next() else { break };
        let line = line.context("cannot read standard input")?;
        let line = line.trim();
        if line == "/exit" {
            break;
        }
        if line.is_empty() {
            continue;
        }
        history.push(Message::user(line));
        let mut reply = String::new();
        let mut out = std::io::stdout();
        match copilot.chat_stream(defs, &history).await {
            Ok(mut stream) => {
                while let Some(piece) = stream.next().await {
                    match piece {
                        Ok(piece) => {
                            reply.push_str(&piece);
                            write!(out, "{piece}")?;
                            out.flush()?;
                        }
                        Err(e) => {
                            eprintln!("\ncopilot: the answer broke off: {e}");
                            break;
                        }
                    }
                }
                writeln!(out)?;
            }
            Err(e) => {
                eprintln!("copilot: {e}");
                history.pop();
                continue;
            }
        }
        history.push(Message::assistant(reply));
    }
    Ok(ExitCode::SUCCESS)
}

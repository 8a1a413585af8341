//! generate: a description in words to a feature view definition that the core validator
//! accepts, with the model's reasoning kept apart.
//!
//! The answer is never trusted: its TOML block is validated together with the existing
//! definitions (so the source, the fields, the filters, the windows and the name are all
//! checked exactly as `freshet features validate` checks them). When it fails, the
//! problems go back to the model and it answers again, a bounded number of times.

use crate::context::{aggregation_names, describe_views, SourceContext, FORMAT_GUIDE};
use crate::error::CopilotError;
use crate::llm::{Llm, Message};
use freshet_core::definitions::{parse_files, Definitions};
use std::path::{Path, PathBuf};

/// A definition that validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The view's TOML, as a file of the definitions folder would hold it.
    pub toml: String,
    /// The view's name.
    pub view: String,
    /// What the model said besides the definition.
    pub reasoning: String,
    /// Answers it took (1 when the first was valid).
    pub attempts: usize,
}

/// The file name a generated view is validated (and saved) under.
pub fn file_name(view: &str) -> String {
    format!("{view}.toml")
}

fn system_prompt(defs: &Definitions, source: &SourceContext) -> String {
    format!(
        "You write feature definitions for Freshet, a real-time feature platform. \
         A definition is a TOML file with one [view] table and its [[feature]] tables, in \
         exactly the format below.\n\n\
         Rules:\n\
         - Answer with one or two sentences of reasoning, then exactly one ```toml fenced \
         block holding the whole file: one [view] and its [[feature]] tables. Nothing after \
         the block.\n\
         - The view reads source `{source_name}`; use only the source's fields listed below.\n\
         - Do not write [[source]] tables.\n\
         - Pick a new view name; names are lowercase letters, digits and underscores.\n\
         - Aggregations: {aggregations}.\n\
         - Every feature needs a description; choose windows and a ttl that fit the request.\n\n\
         {source}\n{views}\n\
         The definition format:\n\n{FORMAT_GUIDE}",
        source_name = source.name,
        aggregations = aggregation_names(),
        source = source.describe(),
        views = describe_views(defs),
    )
}

/// The ```toml block of an answer and the text around it.
pub fn split_answer(answer: &str) -> Option<(String, String)> {
    let start = answer
        .find("```toml")
        .map(|i| (i, i + "```toml".len()))
        .or_else(|| answer.find("```").map(|i| (i, i + 3)))?;
    let rest = &answer[start.1..];
    let end = rest.find("```")?;
    let toml = rest[..end].trim().to_string() + "\n";
    let reasoning = format!("{} {}", &answer[..start.0], &rest[end + 3..])
        .trim()
        .to_string();
    Some((toml, reasoning))
}

/// Problems as a bulleted list, for the model.
pub(crate) fn bullets(problems: &[String]) -> String {
    problems
        .iter()
        .map(|p| format!("- {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The existing definition files of `defs`' folder, as `(path, text)`.
fn existing_files(root: &Path) -> Result<Vec<(PathBuf, String)>, String> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(root)
        .map_err(|e| format!("cannot read the definitions at {}: {e}", root.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            files.push((path, text));
        }
    }
    files.sort();
    Ok(files)
}

/// Validates a candidate view file against the definitions; the view's name, or every
/// problem found, each as `line:column: field: message`.
pub fn validate_candidate(
    defs: &Definitions,
    source: &str,
    toml: &str,
) -> Result<String, Vec<String>> {
    let root = &defs.root;
    let mut files = existing_files(root).map_err(|e| vec![e])?;
    let candidate = root.join("<generated>.toml");
    files.push((candidate.clone(), toml.to_string()));
    let validated = parse_files(root, &files).map_err(|diagnostics| {
        diagnostics
            .iter()
            .map(|d| {
                let place = if d.file == candidate {
                    format!("{}:{}", d.line, d.column)
                } else {
                    format!("{}:{}:{}", d.file.display(), d.line, d.column)
                };
                format!("{place}: {}: {}", d.field, d.message)
            })
            .collect::<Vec<_>>()
    })?;
    if validated.sources.len() != defs.sources.len() {
        return Err(vec![
            "the file defines [[source]] tables; write only one [view] and its [[feature]] tables"
                .into(),
        ]);
    }
    let new: Vec<_> = validated
        .views
        .iter()
        .filter(|v| v.file == candidate)
        .collect();
    match new.as_slice() {
        [view] if view.source == source => Ok(view.name.clone()),
        [view] => Err(vec![format!(
            "view.source: the view reads `{}`, but it must read `{source}`",
            view.source
        )]),
        _ => Err(vec!["the file must hold exactly one [view]".into()]),
    }
}

/// Asks the model for a definition of `description` over `source` until one validates,
/// at most `1 + max_repairs` answers.
pub async fn generate(
    llm: &Llm,
    defs: &Definitions,
    source: &SourceContext,
    description: &str,
    max_repairs: usize,
    on_repair: impl Fn(),
) -> Result<Generated, CopilotError> {
    if description.trim().is_empty() {
        return Err(CopilotError::BadRequest(
            "describe the features to generate (e.g. \"count clicks per user in the last 10 minutes\")"
                .into(),
        ));
    }
    let mut messages = vec![
        Message::system(system_prompt(defs, source)),
        Message::user(description.trim()),
    ];
    let mut problems = Vec::new();
    for attempt in 1..=max_repairs + 1 {
        let answer = llm.complete("generate", &messages).await?;
        problems = match split_answer(&answer) {
            None => vec!["the answer holds no ```toml block".to_string()],
            Some((toml, reasoning)) => match validate_candidate(defs, &source.name, &toml) {
                Ok(view) => {
                    return Ok(Generated {
                        toml,
                        view,
                        reasoning,
                        attempts: attempt,
                    })
                }
                Err(problems) => problems,
            },
        };
        tracing::info!(
            attempt,
            problems = problems.len(),
            "generated definition is invalid"
        );
        if attempt <= max_repairs {
            on_repair();
            messages.push(Message::assistant(answer));
            messages.push(Message::user(format!(
                "That definition is not valid. The validator says:\n{}\n\
                 Answer again in the same format, with the whole corrected file.",
                bullets(&problems)
            )));
        }
    }
    Err(CopilotError::NeverValid {
        attempts: max_repairs + 1,
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_toml_block_is_split_from_the_reasoning() {
        let answer = "Counts clicks.\n```toml\n[view]\nname = \"x\"\n```\nDone.";
        let (toml, reasoning) = split_answer(answer).unwrap();
        assert_eq!(toml, "[view]\nname = \"x\"\n");
        assert_eq!(reasoning, "Counts clicks.\n \nDone.");
        assert_eq!(split_answer("no block here"), None);
        let (toml, _) = split_answer("```\n[view]\n```").unwrap();
        assert_eq!(toml, "[view]\n");
    }
}

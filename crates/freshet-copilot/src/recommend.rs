//! recommend: a use case to ranked feature ideas, each a feature the validator accepts over
//! the source's real fields, with a one-line rationale.
//!
//! The model answers with a JSON array. Every idea is turned into a `[[feature]]` table of
//! a throw-away view and validated like any definition; ideas that fail are sent back
//! with the validator's words (a bounded number of times) and dropped if they never pass.

use crate::context::{aggregation_names, describe_views, SourceContext, FORMAT_GUIDE};
use crate::error::CopilotError;
use crate::generate::{bullets, validate_candidate};
use crate::llm::{Llm, Message};
use freshet_core::definitions::Definitions;
use serde::{Deserialize, Serialize};

/// One recommended feature, valid over the source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Idea {
    pub name: String,
    pub description: String,
    pub aggregation: String,
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub filter: Option<String>,
    /// The window as in a definition, e.g. `{"type": "sliding", "size": "10m", "step": "1m"}`.
    pub window: serde_json::Map<String, serde_json::Value>,
    pub rationale: String,
}

impl Idea {
    /// The idea as a `[[feature]]` table.
    pub fn feature_toml(&self) -> String {
        let quote = |s: &str| serde_json::to_string(s).expect("strings serialise");
        let mut text = format!(
            "[[feature]]\nname = {}\ndescription = {}\naggregation = {}\n",
            quote(&self.name),
            quote(&self.description),
            quote(&self.aggregation)
        );
        if let Some(field) = &self.field {
            text.push_str(&format!("field = {}\n", quote(field)));
        }
        if let Some(filter) = &self.filter {
            text.push_str(&format!("filter = {}\n", quote(filter)));
        }
        let window: Vec<String> = self
            .window
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k} = {}", quote(s)),
                other => format!("{k} = {other}"),
            })
            .collect();
        text.push_str(&format!("window = {{ {} }}\n", window.join(", ")));
        text
    }

    /// A description to give `generate` for a whole view built around this idea.
    pub fn as_description(&self) -> String {
        let mut text = format!("{}: {} ({}", self.name, self.description, self.aggregation);
        if let Some(field) = &self.field {
            text.push_str(&format!(" of {field}"));
        }
        if let Some(filter) = &self.filter {
            text.push_str(&format!(" where {filter}"));
        }
        text.push_str(&format!(
            ", window {})",
            serde_json::Value::Object(self.window.clone())
        ));
        text
    }
}

/// The result: ideas best first, and the ones dropped with why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendations {
    pub ideas: Vec<Idea>,
    pub dropped: Vec<(String, String)>,
    pub attempts: usize,
}

fn system_prompt(defs: &Definitions, source: &SourceContext, count: usize) -> String {
    format!(
        "You recommend machine-learning features for Freshet, a real-time feature platform. \
         Given a use case, propose up to {count} features computed over source `{name}`, \
         best first.\n\n\
         Answer with only a JSON array (no prose, no code fence needed). Each item:\n\
         {{\"name\": \"snake_case_name\", \"description\": \"what it is\", \
         \"aggregation\": one of {aggregations}, \"field\": a source field or null (count \
         needs none), \"filter\": a filter expression or null, \"window\": {{\"type\": \
         \"tumbling\", \"size\": \"5m\"}} or {{\"type\": \"sliding\", \"size\": \"10m\", \
         \"step\": \"1m\"}} or {{\"type\": \"session\", \"gap\": \"30m\"}}, \"rationale\": \
         \"one line: why it helps this use case\"}}\n\
         Use only the fields listed below, in fields and in filters.\n\n\
         {source}\n{views}\nThe definition format:\n\n{FORMAT_GUIDE}",
        name = source.name,
        aggregations = aggregation_names(),
        source = source.describe(),
        views = describe_views(defs),
    )
}

/// The JSON array in an answer (a code fence around it is tolerated).
fn parse_ideas(answer: &str) -> Result<Vec<serde_json::Value>, String> {
    let start = answer.find('[').ok_or("the answer holds no JSON array")?;
    let end = answer.rfind(']').ok_or("the answer holds no JSON array")?;
    if end < start {
        return Err("the answer holds no JSON array".into());
    }
    serde_json::from_str(&answer[start..=end])
        .map_err(|e| format!("the JSON array is malformed: {e}"))
}

/// Checks one idea as a feature of a throw-away view over the source.
fn check(defs: &Definitions, source: &str, value: &serde_json::Value) -> Result<Idea, String> {
    let idea: Idea = serde_json::from_value(value.clone())
        .map_err(|e| format!("not an idea of the asked shape: {e}"))?;
    let toml = format!(
        "[view]\nname = \"copilot_recommendation_check\"\nentity = \"entity\"\nsource = {}\n\
         ttl = \"1d\"\ndescription = \"check\"\n\n{}",
        serde_json::to_string(source).expect("strings serialise"),
        idea.feature_toml()
    );
    validate_candidate(defs, source, &toml)
        .map(|_| idea)
        .map_err(|problems| problems.join("; "))
}

pub async fn recommend(
    llm: &Llm,
    defs: &Definitions,
    source: &SourceContext,
    use_case: &str,
    count: usize,
    max_repairs: usize,
    on_repair: impl Fn(),
) -> Result<Recommendations, CopilotError> {
    if use_case.trim().is_empty() {
        return Err(CopilotError::BadRequest(
            "describe the use case (e.g. \"CTR prediction for e-commerce\")".into(),
        ));
    }
    if count == 0 || count > 50 {
        return Err(CopilotError::BadRequest(
            "ask for between 1 and 50 ideas".into(),
        ));
    }
    let mut messages = vec![
        Message::system(system_prompt(defs, source, count)),
        Message::user(use_case.trim()),
    ];
    let mut last_problems = Vec::new();
    for attempt in 1..=max_repairs + 1 {
        let answer = llm.complete("recommend", &messages).await?;
        let (mut ideas, dropped) = match parse_ideas(&answer) {
            Ok(values) => {
                let mut ideas = Vec::new();
                let mut dropped = Vec::new();
                for (i, value) in values.iter().enumerate() {
                    match check(defs, &source.name, value) {
                        Ok(idea) if ideas.iter().any(|x: &Idea| x.name == idea.name) => dropped
                            .push((idea.name.clone(), "a second idea of this name".to_string())),
                        Ok(idea) => ideas.push(idea),
                        Err(problem) => {
                            let name = value["name"]
                                .as_str()
                                .map_or_else(|| format!("idea #{}", i + 1), str::to_string);
                            dropped.push((name, problem));
                        }
                    }
                }
                (ideas, dropped)
            }
            Err(problem) => (Vec::new(), vec![("answer".to_string(), problem)]),
        };
        if dropped.is_empty() || (attempt > max_repairs && !ideas.is_empty()) {
            ideas.truncate(count);
            return Ok(Recommendations {
                ideas,
                dropped,
                attempts: attempt,
            });
        }
        last_problems = dropped
            .iter()
            .map(|(name, problem)| format!("{name}: {problem}"))
            .collect();
        if attempt <= max_repairs {
            on_repair();
            messages.push(Message::assistant(answer));
            messages.push(Message::user(format!(
                "Some ideas are not valid features. The validator says:\n{}\n\
                 Answer again with the whole corrected JSON array.",
                bullets(&last_problems)
            )));
        }
    }
    Err(CopilotError::NeverValid {
        attempts: max_repairs + 1,
        problems: last_problems,
    })
}

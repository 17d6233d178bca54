//! The built-in lead-qualification bot, as data.
//!
//! After a missed call or a first text, Switchboard qualifies the lead by SMS (the
//! CallbackCloser flow): a greeting, then one question per [`Step`], then a summary. A
//! [`Script`] is plain serializable data, so a tenant's customized script can be stored as JSON;
//! the conversation's progress is a [`ScriptState`], stored between messages. [`Script::start`]
//! and [`Script::advance`] are pure functions from (script, state, input) to a [`Turn`].
//!
//! Callers run [`crate::compliance::detect`] on every inbound message first: STOP/HELP/START
//! keywords are never answers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::template;

/// Value stored for a required step whose retries ran out.
pub const UNKNOWN: &str = "unknown";

/// Longest free-text answer to a [`Answer::Choice`] step with `allow_free_text`, in chars
/// (one GSM-7 SMS).
pub const MAX_FREE_TEXT_CHARS: usize = 160;

/// Replies that skip an optional [`Answer::Text`] step (matched like choice aliases).
pub const SKIP_WORDS: &[&str] = &["skip", "no", "n/a", "na", "none", "pass"];

/// A qualification script: a greeting, questions, and a closing summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Script {
    /// First message, sent before the first prompt (plain text, not a template).
    pub greeting: String,
    /// The questions, asked in order.
    pub steps: Vec<Step>,
    /// Closing message: a [`template::render`] template whose `{field}` placeholders are the
    /// collected answers (missing ones render empty). After rendering, runs of spaces collapse
    /// and a space before `, . ! ? ; :` is dropped, so `"Thanks {name}!"` reads `"Thanks!"`
    /// when the name was skipped.
    pub summary: String,
    /// Invalid answers re-asked per step before giving up on it; each step consumes at most
    /// `max_retries + 1` inputs.
    pub max_retries: u8,
    /// The text the business owner gets about the lead, if any (absent in scripts stored
    /// before it existed).
    #[serde(default)]
    pub owner_alert: Option<OwnerAlert>,
}

/// A text to the business owner once a lead is worth a call back: seed 001 (CallbackCloser)
/// texts the owner "a summary SMS + lead link" after the ZIP is collected, to the owner's
/// notification phone. Sent once per run of the script, when it moves past [`Self::after`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerAlert {
    /// The [`Step::field`] whose step, once answered, skipped or given up on, triggers the
    /// alert (`zip` in [`Script::qualification`]). A field no step has never triggers it.
    pub after: String,
    /// A [`template::render`] template: the answers so far by field (missing ones render
    /// empty), `{phone}` (the customer's E.164 number) and `{link}` (the conversation's
    /// address in the inbox); tidied like [`Script::summary`].
    pub text: String,
}

/// One question of a [`Script`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Key the answer is stored under in [`ScriptState::answers`] (and its summary placeholder).
    pub field: String,
    /// Question sent when the step is reached.
    pub prompt: String,
    /// Sent instead of moving on when an answer is invalid.
    pub reprompt: String,
    /// What counts as an answer, and how it is normalized.
    pub answer: Answer,
}

/// What a [`Step`] accepts. Serialized with a `"kind"` tag: `"choice"`, `"us_zip"`, `"text"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Answer {
    /// One of `options`, stored as its `value`. With `allow_free_text`, any other non-empty
    /// reply is stored as typed (trimmed, at most [`MAX_FREE_TEXT_CHARS`] chars).
    Choice {
        /// The accepted options.
        options: Vec<Choice>,
        /// Whether a reply matching no option is accepted as a description.
        allow_free_text: bool,
    },
    /// A US ZIP code (USPS): 5 digits, or ZIP+4 (`78701-1234` or 9 digits) normalized to 5,
    /// found anywhere in the reply ("my zip is 78701"). Replies with two different ZIPs, or
    /// `00000`, are invalid.
    UsZip,
    /// Free text with at least one letter or digit, trimmed and cut to `max_chars` chars
    /// (0 = no limit). If `optional`, a [`SKIP_WORDS`] reply skips the step.
    Text {
        /// Whether the step can be skipped (and is skipped, not "unknown", on giving up).
        optional: bool,
        /// Longest stored answer, in chars; 0 means no limit.
        max_chars: u32,
    },
}

/// One option of an [`Answer::Choice`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    /// Stored answer, e.g. `"Repair"`; also accepted as a reply.
    pub value: String,
    /// Other accepted replies, e.g. `"1"`, `"fix"`. Replies and aliases are compared
    /// case-insensitively after trimming punctuation/symbols from the ends and collapsing
    /// inner whitespace.
    pub aliases: Vec<String>,
}

/// Progress through a [`Script`]; `Default` is "not started" (about to ask step 0).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptState {
    /// Index of the step being asked.
    pub step: usize,
    /// Invalid answers given to the current step so far.
    pub retries: u8,
    /// Collected answers by [`Step::field`].
    pub answers: BTreeMap<String, String>,
    /// Whether the summary has been sent; further input is ignored.
    pub finished: bool,
}

/// The result of one bot turn: messages to send and the state to store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// Messages to send, in order (possibly none).
    pub replies: Vec<String>,
    /// The new state.
    pub state: ScriptState,
    /// `(field, value)` stored by this turn, including [`UNKNOWN`]; `None` for a re-ask, a
    /// skip, or no-op.
    pub captured: Option<(String, String)>,
    /// Same as `state.finished`.
    pub finished: bool,
    /// Whether this turn moved past the [`OwnerAlert::after`] step: the caller sends the
    /// owner [`Script::render_owner_alert`].
    #[serde(default)]
    pub alert_owner: bool,
}

/// How one reply was understood.
enum Outcome {
    Value(String),
    Skip,
    Invalid,
}

/// Lower-cases, trims non-alphanumerics from both ends and collapses inner whitespace.
fn normalize(s: &str) -> String {
    s.trim_matches(|c: char| !c.is_alphanumeric())
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The first `max_chars` chars of `s` (all of it if `max_chars` is 0).
fn truncate(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((end, _)) if max_chars > 0 => s[..end].trim_end(),
        _ => s,
    }
}

/// The one distinct 5-digit ZIP in `input` (from a 5-digit run, or the first five of a
/// 9-digit run); digit runs of other lengths are ignored.
fn extract_zip(input: &str) -> Option<&str> {
    let mut found: Option<&str> = None;
    for run in input.split(|c: char| !c.is_ascii_digit()) {
        let zip = match run.len() {
            5 | 9 => &run[..5],
            _ => continue,
        };
        match found {
            Some(f) if f != zip => return None,
            _ => found = Some(zip),
        }
    }
    found.filter(|z| *z != "00000")
}

impl Answer {
    fn interpret(&self, input: &str) -> Outcome {
        let norm = normalize(input);
        if norm.is_empty() {
            return Outcome::Invalid;
        }
        match self {
            Answer::Choice {
                options,
                allow_free_text,
            } => {
                let matches = |s: &String| normalize(s) == norm;
                if let Some(choice) = options
                    .iter()
                    .find(|o| matches(&o.value) || o.aliases.iter().any(matches))
                {
                    Outcome::Value(choice.value.clone())
                } else if *allow_free_text {
                    Outcome::Value(truncate(input.trim(), MAX_FREE_TEXT_CHARS).to_owned())
                } else {
                    Outcome::Invalid
                }
            }
            Answer::UsZip => {
                extract_zip(input).map_or(Outcome::Invalid, |z| Outcome::Value(z.into()))
            }
            Answer::Text {
                optional,
                max_chars,
            } => {
                if *optional && SKIP_WORDS.contains(&norm.as_str()) {
                    Outcome::Skip
                } else {
                    Outcome::Value(truncate(input.trim(), *max_chars as usize).to_owned())
                }
            }
        }
    }

    /// What is recorded when the retries run out.
    fn give_up(&self) -> Outcome {
        match self {
            Answer::Text { optional: true, .. } => Outcome::Skip,
            _ => Outcome::Value(UNKNOWN.to_owned()),
        }
    }
}

/// Collapses runs of spaces and drops a space before `, . ! ? ; :` on each line.
fn tidy(text: &str) -> String {
    text.lines()
        .map(|line| {
            let mut out = String::with_capacity(line.len());
            for word in line.split(' ').filter(|w| !w.is_empty()) {
                if !out.is_empty() && !word.starts_with([',', '.', '!', '?', ';', ':']) {
                    out.push(' ');
                }
                out.push_str(word);
            }
            out
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn choice(value: &str, aliases: &[&str]) -> Choice {
    Choice {
        value: value.to_owned(),
        aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
    }
}

fn step(field: &str, prompt: &str, reprompt: &str, answer: Answer) -> Step {
    Step {
        field: field.to_owned(),
        prompt: prompt.to_owned(),
        reprompt: reprompt.to_owned(),
        answer,
    }
}

impl Script {
    /// The default CallbackCloser-style script for `business_name`: greeting (with STOP
    /// opt-out instructions, per CTIA), then `service` (Repair / Install / Maintenance or a
    /// description), `urgency` (Emergency / Today / This week / Just a quote), `zip` (US ZIP),
    /// `best_time` (Morning / Afternoon / Evening), optional `name` (max 40 chars), and a
    /// summary that thanks the customer, lists the answers and says the business will follow
    /// up. Numbered replies ("1", "2", ...) work for every choice. `max_retries` is 2. Once
    /// the ZIP is answered (or given up on), the owner alert lists the customer's number,
    /// service, urgency and ZIP, and the link to the conversation.
    pub fn qualification(business_name: &str) -> Script {
        let business = business_name.trim();
        let (greeting_intro, follow_up) = if business.is_empty() {
            ("Hi! Thanks for reaching out.".to_owned(), "We".to_owned())
        } else {
            (
                format!("Hi, this is {business}! Thanks for reaching out."),
                template::escape(business),
            )
        };
        let steps = vec![
            step(
                "service",
                "What can we help with? Reply 1 for Repair, 2 for Install, 3 for Maintenance, or describe the job.",
                "Sorry, I didn't catch that. Reply 1 (Repair), 2 (Install), 3 (Maintenance) or a few words about the job.",
                Answer::Choice {
                    options: vec![
                        choice("Repair", &["1", "fix", "broken", "repairs"]),
                        choice(
                            "Install",
                            &["2", "installation", "new", "replace", "replacement"],
                        ),
                        choice(
                            "Maintenance",
                            &[
                                "3",
                                "tune up",
                                "tune-up",
                                "service",
                                "checkup",
                                "inspection",
                            ],
                        ),
                    ],
                    allow_free_text: true,
                },
            ),
            step(
                "urgency",
                "How soon do you need us? Reply 1 Emergency, 2 Today, 3 This week, 4 Just a quote.",
                "Please reply 1 (Emergency), 2 (Today), 3 (This week) or 4 (Just a quote).",
                Answer::Choice {
                    options: vec![
                        choice("Emergency", &["1", "asap", "urgent", "now", "right now"]),
                        choice("Today", &["2", "same day", "tonight"]),
                        choice("This week", &["3", "week", "soon", "this wk"]),
                        choice(
                            "Just a quote",
                            &["4", "quote", "estimate", "price", "pricing"],
                        ),
                    ],
                    allow_free_text: false,
                },
            ),
            step(
                "zip",
                "What's the ZIP code where you need service?",
                "Please reply with the 5-digit ZIP code, e.g. 78701.",
                Answer::UsZip,
            ),
            step(
                "best_time",
                "What's the best time to reach you? Reply 1 Morning, 2 Afternoon, 3 Evening.",
                "Please reply 1 (Morning), 2 (Afternoon) or 3 (Evening).",
                Answer::Choice {
                    options: vec![
                        choice("Morning", &["1", "am", "a.m", "mornings", "early"]),
                        choice(
                            "Afternoon",
                            &["2", "pm", "p.m", "afternoons", "midday", "noon"],
                        ),
                        choice(
                            "Evening",
                            &["3", "evenings", "night", "tonight", "after work"],
                        ),
                    ],
                    allow_free_text: false,
                },
            ),
            step(
                "name",
                "Last one: what's your name? (Reply SKIP to skip.)",
                "What name should we use? Reply SKIP to skip.",
                Answer::Text {
                    optional: true,
                    max_chars: 40,
                },
            ),
        ];
        Script {
            greeting: format!(
                "{greeting_intro} A few quick questions so we can help you faster. Reply STOP to opt out."
            ),
            steps,
            summary: format!(
                "Thanks {{name}}! Here's what we have:\nService: {{service}}\nUrgency: {{urgency}}\n\
                 ZIP: {{zip}}\nBest time: {{best_time}}\n{follow_up} will follow up shortly."
            ),
            max_retries: 2,
            owner_alert: Some(OwnerAlert {
                after: "zip".to_owned(),
                text:
                    "New lead {phone}\nService: {service}\nUrgency: {urgency}\nZIP: {zip}\n{link}"
                        .to_owned(),
            }),
        }
    }

    /// Opens the conversation: replies are the greeting and the first prompt (or the summary
    /// if there are no steps); the state is at step 0.
    pub fn start(&self) -> Turn {
        let mut state = ScriptState::default();
        let next = self.next_message(&mut state);
        Turn {
            replies: vec![self.greeting.clone(), next],
            finished: state.finished,
            state,
            captured: None,
            alert_owner: false,
        }
    }

    /// Feeds one inbound reply to the current step.
    ///
    /// A valid answer is normalized, stored under the step's field, and answered with the next
    /// prompt (or the summary after the last step). An invalid one (empty, or not accepted by
    /// the [`Answer`]) is answered with the step's reprompt; once `max_retries` re-asks have
    /// been used, the next invalid answer records [`UNKNOWN`] (optional text steps: nothing)
    /// and moves on. So any `steps.len() * (max_retries + 1)` inputs finish the script. A
    /// finished (or out-of-range) state yields no replies and stays finished.
    pub fn advance(&self, state: &ScriptState, input: &str) -> Turn {
        let mut state = state.clone();
        let current = if state.finished {
            None
        } else {
            self.steps.get(state.step)
        };
        let Some(step) = current else {
            state.finished = true;
            return Turn {
                replies: Vec::new(),
                state,
                captured: None,
                finished: true,
                alert_owner: false,
            };
        };
        let outcome = match step.answer.interpret(input) {
            Outcome::Invalid if state.retries < self.max_retries => {
                state.retries += 1;
                return Turn {
                    replies: vec![step.reprompt.clone()],
                    state,
                    captured: None,
                    finished: false,
                    alert_owner: false,
                };
            }
            Outcome::Invalid => step.answer.give_up(),
            outcome => outcome,
        };
        let captured = match outcome {
            Outcome::Value(value) => {
                state.answers.insert(step.field.clone(), value.clone());
                Some((step.field.clone(), value))
            }
            Outcome::Skip | Outcome::Invalid => None,
        };
        state.step += 1;
        state.retries = 0;
        let next = self.next_message(&mut state);
        Turn {
            replies: vec![next],
            finished: state.finished,
            state,
            captured,
            alert_owner: self
                .owner_alert
                .as_ref()
                .is_some_and(|a| a.after == step.field),
        }
    }

    /// Asks the current question again without taking any input as its answer, for when the
    /// customer cannot be answering it: the last message they got from us in the thread was
    /// not this question (a person wrote since, the question was withdrawn by a takeover or
    /// suppressed by an opt-out, or a STOP/START/HELP reply came after it). Retries are not
    /// used up. A finished (or out-of-range) state yields no replies and stays finished.
    pub fn ask_again(&self, state: &ScriptState) -> Turn {
        let mut state = state.clone();
        let prompt = match self.steps.get(state.step) {
            Some(step) if !state.finished => Some(step.prompt.clone()),
            _ => None,
        };
        state.finished |= prompt.is_none();
        Turn {
            replies: prompt.into_iter().collect(),
            finished: state.finished,
            state,
            captured: None,
            alert_owner: false,
        }
    }

    /// The prompt for `state.step`, or the rendered summary (marking the state finished).
    fn next_message(&self, state: &mut ScriptState) -> String {
        match self.steps.get(state.step) {
            Some(step) => step.prompt.clone(),
            None => {
                state.finished = true;
                self.render_summary(&state.answers)
            }
        }
    }

    /// The summary with `answers` filled in (see [`Script::summary`]).
    pub fn render_summary(&self, answers: &BTreeMap<String, String>) -> String {
        tidy(&template::render(&self.summary, |name| {
            answers.get(name).cloned()
        }))
    }

    /// The [`OwnerAlert`] text with `answers`, the customer's `phone` and the conversation's
    /// `link` filled in; `None` when the script has no owner alert.
    pub fn render_owner_alert(
        &self,
        answers: &BTreeMap<String, String>,
        phone: &str,
        link: &str,
    ) -> Option<String> {
        let alert = self.owner_alert.as_ref()?;
        Some(tidy(&template::render(&alert.text, |name| match name {
            "phone" => Some(phone.to_owned()),
            "link" => Some(link.to_owned()),
            _ => answers.get(name).cloned(),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(script: &Script, inputs: &[&str]) -> Turn {
        let mut turn = script.start();
        for input in inputs {
            turn = script.advance(&turn.state, input);
        }
        turn
    }

    #[test]
    fn start_greets_and_asks_the_first_question() {
        let script = Script::qualification("Acme Plumbing");
        let turn = script.start();
        assert_eq!(turn.replies.len(), 2);
        assert!(turn.replies[0].contains("Acme Plumbing"));
        assert!(turn.replies[0].contains("STOP"));
        assert_eq!(turn.replies[1], script.steps[0].prompt);
        assert_eq!(turn.state, ScriptState::default());
        assert!(!turn.finished);
        assert_eq!(turn.captured, None);
    }

    #[test]
    fn the_owner_is_alerted_once_the_zip_is_in_with_the_lead_so_far() {
        let script = Script::qualification("Acme Plumbing");
        let mut turn = script.start();
        assert!(!turn.alert_owner);
        for input in ["2", "today"] {
            turn = script.advance(&turn.state, input);
            assert!(!turn.alert_owner, "{input}");
        }
        // Invalid ZIPs re-ask without alerting; the ZIP moves the script on and alerts.
        turn = script.advance(&turn.state, "not sure");
        assert!(!turn.alert_owner);
        turn = script.advance(&turn.state, "78701");
        assert!(turn.alert_owner);
        let text = script
            .render_owner_alert(
                &turn.state.answers,
                "+15125550111",
                "https://sb.example/c?c=1",
            )
            .expect("the qualification script alerts the owner");
        assert_eq!(
            text,
            "New lead +15125550111\nService: Install\nUrgency: Today\nZIP: 78701\nhttps://sb.example/c?c=1"
        );
        for input in ["evening", "Sam"] {
            turn = script.advance(&turn.state, input);
            assert!(!turn.alert_owner, "{input}");
        }
        assert!(turn.finished);

        // Giving up on the ZIP alerts too: the owner can still call the customer back.
        let mut turn = script.start();
        for input in ["1", "1", "no", "no", "no"] {
            turn = script.advance(&turn.state, input);
        }
        assert!(turn.alert_owner);
        assert_eq!(
            turn.state.answers.get("zip").map(String::as_str),
            Some(UNKNOWN)
        );

        let without = Script {
            owner_alert: None,
            ..script
        };
        assert_eq!(
            without.render_owner_alert(&BTreeMap::new(), "+1", "x"),
            None
        );
        assert!(!run(&without, &["1", "1", "78701"]).alert_owner);
    }

    #[test]
    fn a_script_stored_before_owner_alerts_still_loads() {
        let mut json = serde_json::to_value(Script::qualification("Acme")).expect("json");
        json.as_object_mut().expect("object").remove("owner_alert");
        let script: Script = serde_json::from_value(json).expect("loads");
        assert_eq!(script.owner_alert, None);
    }

    #[test]
    fn happy_path_collects_everything() {
        let script = Script::qualification("Acme Plumbing");
        let mut state = script.start().state;
        let expected = [
            ("1", "service", "Repair", "urgency"),
            ("ASAP!", "urgency", "Emergency", "zip"),
            ("my zip is 78701-1234", "zip", "78701", "best_time"),
            ("p.m.", "best_time", "Afternoon", "name"),
        ];
        for (input, field, value, next) in expected {
            let turn = script.advance(&state, input);
            assert_eq!(turn.captured, Some((field.into(), value.into())), "{input}");
            let next_step = script.steps.iter().find(|s| s.field == next).unwrap();
            assert_eq!(turn.replies, vec![next_step.prompt.clone()]);
            state = turn.state;
        }
        let turn = script.advance(&state, "  Sam Houston ");
        assert_eq!(turn.captured, Some(("name".into(), "Sam Houston".into())));
        assert!(turn.finished && turn.state.finished);
        assert_eq!(
            turn.replies,
            vec![
                "Thanks Sam Houston! Here's what we have:\nService: Repair\nUrgency: Emergency\n\
                 ZIP: 78701\nBest time: Afternoon\nAcme Plumbing will follow up shortly."
                    .to_owned()
            ]
        );
        let after = script.advance(&turn.state, "hello?");
        assert!(after.replies.is_empty());
        assert!(after.finished);
        assert_eq!(after.state, turn.state);
    }

    #[test]
    fn asking_again_keeps_the_step_and_its_retries() {
        let script = Script::qualification("Acme");
        let state = run(&script, &["1", "whenever works"]).state;
        assert_eq!((state.step, state.retries), (1, 1));
        let turn = script.ask_again(&state);
        assert_eq!(turn.replies, vec![script.steps[1].prompt.clone()]);
        assert_eq!(turn.state, state);
        assert_eq!(turn.captured, None);
        assert!(!turn.finished);
        let done = run(&script, &["1", "today", "78701", "evening", "skip"]).state;
        let turn = script.ask_again(&done);
        assert!(turn.replies.is_empty() && turn.finished);
        assert_eq!(turn.state, done);
    }

    #[test]
    fn free_text_service_and_skipped_name() {
        let script = Script::qualification("Acme");
        let turn = run(
            &script,
            &["Water heater leaking", "today", "78701", "evening", "skip"],
        );
        assert!(turn.finished);
        let a = &turn.state.answers;
        assert_eq!(a["service"], "Water heater leaking");
        assert_eq!(a["urgency"], "Today");
        assert!(!a.contains_key("name"));
        assert!(turn.replies[0].starts_with("Thanks! Here's what we have:"));
        assert!(turn.replies[0].ends_with("Acme will follow up shortly."));
    }

    #[test]
    fn invalid_answers_are_re_asked() {
        let script = Script::qualification("Acme");
        let state = run(&script, &["1"]).state;
        let turn = script.advance(&state, "whenever works");
        assert_eq!(turn.replies, vec![script.steps[1].reprompt.clone()]);
        assert_eq!(turn.state.retries, 1);
        assert_eq!(turn.state.step, 1);
        assert_eq!(turn.captured, None);
        let turn = script.advance(&turn.state, "  ");
        assert_eq!(turn.state.retries, 2);
        let turn = script.advance(&turn.state, "2");
        assert_eq!(turn.captured, Some(("urgency".into(), "Today".into())));
        assert_eq!(turn.state.retries, 0);
        assert_eq!(turn.state.step, 2);
    }

    #[test]
    fn giving_up_records_unknown_or_skips() {
        let script = Script::qualification("Acme");
        let state = run(&script, &["1", "2"]).state;
        let turn = run_from(&script, state, &["none", "1234", "78701 or 78702"]);
        assert_eq!(turn.captured, Some(("zip".into(), UNKNOWN.into())));
        assert_eq!(turn.replies, vec![script.steps[3].prompt.clone()]);
        let turn = run_from(&script, turn.state, &["3", "?", "", "..."]);
        assert!(turn.finished);
        assert_eq!(turn.captured, None);
        assert!(!turn.state.answers.contains_key("name"));
        assert!(turn.replies[0].contains("ZIP: unknown"));
    }

    fn run_from(script: &Script, mut state: ScriptState, inputs: &[&str]) -> Turn {
        let mut turn = None;
        for input in inputs {
            let t = script.advance(&state, input);
            state = t.state.clone();
            turn = Some(t);
        }
        turn.unwrap()
    }

    #[test]
    fn zip_extraction() {
        assert_eq!(extract_zip("78701"), Some("78701"));
        assert_eq!(extract_zip("787011234"), Some("78701"));
        assert_eq!(extract_zip("zip: 78701-1234."), Some("78701"));
        assert_eq!(extract_zip("123 Main St, Austin TX 78701"), Some("78701"));
        assert_eq!(extract_zip("78701, yes 78701"), Some("78701"));
        assert_eq!(extract_zip("78701 or 78702"), None);
        assert_eq!(extract_zip("7870"), None);
        assert_eq!(extract_zip("512-555-0100"), None);
        assert_eq!(extract_zip("00000"), None);
        assert_eq!(extract_zip("７８７０１"), None);
    }

    #[test]
    fn text_is_truncated_on_a_char_boundary() {
        let script = Script::qualification("Acme");
        let long = "é".repeat(50);
        let turn = run(&script, &["1", "2", "78701", "1", &long]);
        assert_eq!(turn.state.answers["name"], "é".repeat(40));
        assert_eq!(truncate("ab  cd", 3), "ab");
        assert_eq!(truncate("abc", 0), "abc");
        assert_eq!(truncate("abc", 5), "abc");
    }

    #[test]
    fn business_name_braces_are_not_placeholders() {
        let script = Script::qualification("{zip} Plumbing");
        let turn = run(&script, &["1", "2", "78701", "1", "Sam"]);
        assert!(turn.replies[0].ends_with("{zip} Plumbing will follow up shortly."));
        assert!(
            Script::qualification("  ")
                .summary
                .contains("We will follow up")
        );
    }

    #[test]
    fn default_script_is_cheap_and_unambiguous() {
        let script = Script::qualification("Abcdefghij Klmnopqrst Plumbing");
        let messages = std::iter::once(&script.greeting)
            .chain(script.steps.iter().flat_map(|s| [&s.prompt, &s.reprompt]));
        for message in messages {
            let c = crate::segments::count(message);
            assert_eq!(c.encoding, crate::segments::Encoding::Gsm7, "{message}");
            assert_eq!(c.segments, 1, "{message}");
        }
        for step in &script.steps {
            if let Answer::Choice { options, .. } = &step.answer {
                let mut seen = std::collections::BTreeSet::new();
                for o in options {
                    for word in std::iter::once(&o.value).chain(&o.aliases) {
                        let word = normalize(word);
                        assert!(!word.is_empty());
                        assert!(seen.insert(word.clone()), "{}: {word} twice", step.field);
                    }
                }
            }
        }
    }

    #[test]
    fn scripts_are_data() {
        let script = Script::qualification("Acme");
        let json = serde_json::to_string(&script).unwrap();
        assert!(json.contains(r#""kind":"us_zip""#));
        assert_eq!(serde_json::from_str::<Script>(&json).unwrap(), script);
        let empty = Script {
            steps: Vec::new(),
            ..script
        };
        let turn = empty.start();
        assert!(turn.finished);
        assert_eq!(turn.replies.len(), 2);
    }

    fn input() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[0-9]{1,10}",
            prop::sample::select(vec![
                "1", "2", "3", "4", "skip", "no", "78701", "am", "PM", " ", "", "asap", "Sam",
            ])
            .prop_map(str::to_owned),
            "\\PC{0,20}",
        ]
    }

    proptest! {
        #[test]
        fn any_inputs_finish_in_bounded_turns_with_well_formed_answers(
            max_retries in 0u8..4,
            inputs in prop::collection::vec(input(), 0..40),
        ) {
            let script = Script { max_retries, ..Script::qualification("Acme") };
            let bound = script.steps.len() * (usize::from(max_retries) + 1);
            let mut turn = script.start();
            let mut alerts = 0;
            for (i, input) in inputs.iter().enumerate() {
                let was_finished = turn.finished;
                turn = script.advance(&turn.state, input);
                if turn.alert_owner {
                    alerts += 1;
                    prop_assert!(turn.state.answers.contains_key("zip"), "alerted before the ZIP");
                }
                prop_assert_eq!(turn.finished, turn.state.finished);
                if was_finished {
                    prop_assert!(turn.replies.is_empty() && turn.finished);
                } else {
                    prop_assert_eq!(turn.replies.len(), 1);
                }
                if i + 1 >= bound {
                    prop_assert!(turn.finished, "not finished after {} inputs", i + 1);
                }
            }
            prop_assert!(alerts <= 1, "the owner alerted {} times", alerts);
            prop_assert!(!turn.finished || alerts == 1, "finished without alerting the owner");
            for (field, value) in &turn.state.answers {
                let step = script.steps.iter().find(|s| &s.field == field);
                prop_assert!(step.is_some(), "unknown field {}", field);
                match &step.unwrap().answer {
                    Answer::Choice { options, allow_free_text } => {
                        let is_option = options.iter().any(|o| &o.value == value);
                        let is_free_text = *allow_free_text && inputs.iter().any(|i| {
                            truncate(i.trim(), MAX_FREE_TEXT_CHARS) == value
                        });
                        prop_assert!(is_option || is_free_text || value == UNKNOWN, "{} = {:?}", field, value);
                    }
                    Answer::UsZip => prop_assert!(
                        value == UNKNOWN || (value.len() == 5 && value.bytes().all(|b| b.is_ascii_digit()))
                    ),
                    Answer::Text { max_chars, .. } => {
                        prop_assert!(!value.is_empty());
                        prop_assert!(value.chars().count() <= *max_chars as usize);
                    }
                }
            }
        }

        #[test]
        fn every_input_sequence_of_the_bound_finishes(
            inputs in prop::collection::vec(input(), 15),
        ) {
            let script = Script::qualification("Acme");
            let mut state = script.start().state;
            for input in &inputs {
                state = script.advance(&state, input).state;
            }
            prop_assert!(state.finished);
        }

        #[test]
        fn advance_never_panics_on_any_state(
            step in 0usize..10,
            retries in any::<u8>(),
            finished in any::<bool>(),
            input in any::<String>(),
        ) {
            let script = Script::qualification("Acme");
            let state = ScriptState { step, retries, answers: BTreeMap::new(), finished };
            let _ = script.advance(&state, &input);
        }
    }
}

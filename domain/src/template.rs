//! A minimal message template language: `{name}` placeholders and `{{` / `}}` escapes, the
//! same brace conventions as Rust's `format!` (without format specs).

/// Renders `template`, replacing each `{name}` (name = one or more ASCII letters, digits or
/// `_`) with `lookup(name)`, or with nothing when the lookup returns `None`.
///
/// `{{` and `}}` render as literal `{` and `}`. Anything else (an unmatched brace, `{}`,
/// `{not a name}`) is left as text; rendering never fails or panics. Substituted values are
/// inserted verbatim and never re-rendered.
pub fn render(template: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push('}');
            rest = after;
        } else if let Some(after) = tail.strip_prefix('{') {
            let name_len = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            match after[name_len..].strip_prefix('}') {
                Some(after_close) if name_len > 0 => {
                    if let Some(value) = lookup(&after[..name_len]) {
                        out.push_str(&value);
                    }
                    rest = after_close;
                }
                _ => {
                    out.push('{');
                    rest = after;
                }
            }
        } else {
            out.push('}');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Escapes `text` so that [`render`] reproduces it literally (doubles every `{` and `}`). Use
/// it when building a template from user-supplied text such as a business name.
pub fn escape(text: &str) -> String {
    text.replace('{', "{{").replace('}', "}}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "name" => Some("Sam".into()),
            "zip_5" => Some("78701".into()),
            "braces" => Some("{name}".into()),
            _ => None,
        }
    }

    #[test]
    fn replaces_placeholders() {
        assert_eq!(
            render("Hi {name}, ZIP {zip_5}.", vars),
            "Hi Sam, ZIP 78701."
        );
        assert_eq!(render("{name}{name}", vars), "SamSam");
        assert_eq!(render("no placeholders", vars), "no placeholders");
        assert_eq!(render("", vars), "");
    }

    #[test]
    fn unknown_names_render_empty() {
        assert_eq!(render("Hi {who}!", vars), "Hi !");
    }

    #[test]
    fn doubled_braces_are_literal() {
        assert_eq!(render("{{name}}", vars), "{name}");
        assert_eq!(render("{{{name}}}", vars), "{Sam}");
        assert_eq!(render("a }} b {{", vars), "a } b {");
    }

    #[test]
    fn values_are_not_re_rendered() {
        assert_eq!(render("{braces}", vars), "{name}");
    }

    #[test]
    fn unbalanced_or_invalid_braces_stay_as_text() {
        assert_eq!(render("{", vars), "{");
        assert_eq!(render("}", vars), "}");
        assert_eq!(render("{name", vars), "{name");
        assert_eq!(render("name}", vars), "name}");
        assert_eq!(render("{}", vars), "{}");
        assert_eq!(render("{first name}", vars), "{first name}");
        assert_eq!(render("{{name}", vars), "{name}");
        assert_eq!(render("{é}{name}", vars), "{é}Sam");
    }

    #[test]
    fn escape_round_trips() {
        let text = "Bob's {Best} }} Plumbing {{";
        assert_eq!(render(&escape(text), vars), text);
    }

    proptest! {
        #[test]
        fn never_panics(s in any::<String>(), t in "[{}a-z_ ]{0,20}") {
            let _ = render(&s, vars);
            let _ = render(&t, vars);
        }

        #[test]
        fn escaped_text_renders_verbatim(s in any::<String>()) {
            prop_assert_eq!(render(&escape(&s), vars), s);
        }
    }
}

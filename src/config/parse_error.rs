//! TOML parse errors worded so they never echo a secret.
//!
//! toml's report quotes the offending source line under a caret, and serde's
//! type errors quote the value (`invalid type: string "…", expected a
//! sequence`). On a line that holds a secret — `client_secret`,
//! `inbound_keys`, `broker.client_secrets.*`, any `*pass*`/`*key*`/`*token*`/
//! `*secr*` key (`encryption_key`, `password`…), a URL with user info, an
//! unknown (perhaps misspelt) key — the report names the line, column and key
//! instead, and masks whatever part of the value the message quotes. Every
//! other error keeps toml's full report.

/// The error text for `error`, found while parsing `text`.
pub(super) fn describe(text: &str, error: &toml::de::Error) -> String {
    let Some(span) = error.span() else {
        return mask_values(error.message(), &secret_values(text), "");
    };
    let start = floor_char_boundary(text, span.start);
    let before = &text[..start];
    let line = before.matches('\n').count();
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |tail| tail.chars().count())
        + 1;
    let located = locate(text, line);
    // An unknown key may be a misspelt secret (`client_secert = "…"`): its
    // line is never shown; the message names the key anyway.
    let unknown_key = error.message().starts_with("unknown field");
    // A multi-line string (`"""…"""`, `'''…'''`) can carry a secret onto
    // lines that `locate` cannot attribute to a key: with one in the file, no
    // source line is shown at all.
    let multi_line = text.contains("\"\"\"") || text.contains("'''");
    if !located.secret && !unknown_key && !multi_line {
        return error.to_string();
    }
    // The key's own name is not the secret, even where the value holds it.
    let name = located
        .key
        .as_deref()
        .and_then(|key| key.rsplit('.').next())
        .unwrap_or_default();
    let key = located
        .key
        .as_deref()
        .map_or_else(String::new, |key| format!(", key `{key}`"));
    format!(
        "TOML parse error at line {}, column {column}{key}: {} (the line is not shown: it holds a secret)",
        line + 1,
        mask_values(error.message(), &located.values, name),
    )
}

/// Where an error line sits: the key it belongs to, whether that key's value
/// is a secret, and the text of that value (to mask in the message).
struct Located {
    key: Option<String>,
    secret: bool,
    values: Vec<String>,
}

/// Walks the lines up to `target`, tracking the table header and the key
/// whose value is open (a multi-line array or inline table).
fn locate(text: &str, target: usize) -> Located {
    let mut table = String::new();
    let mut key: Option<String> = None;
    let mut values: Vec<String> = Vec::new();
    let mut depth = 0_i32;
    for (index, line) in text.split('\n').enumerate() {
        let trimmed = line.trim();
        // The part of the line that may open or close brackets of a value.
        let mut value_part = line;
        if depth <= 0 {
            depth = 0;
            values.clear();
            if trimmed.starts_with('[') {
                table = trimmed
                    .trim_matches(|c| c == '[' || c == ']')
                    .trim()
                    .to_owned();
                key = None;
            } else if let Some((name, value)) = trimmed.split_once('=') {
                let name = name.trim().trim_matches(['"', '\'']);
                key = Some(join(&table, name));
                values.push(value.to_owned());
                value_part = value;
            } else {
                key = None;
            }
        } else {
            values.push(line.to_owned());
        }
        if index == target {
            let secret = key.as_deref().is_some_and(is_secret_key) || has_userinfo(line);
            return Located {
                key,
                secret,
                values,
            };
        }
        if key.is_some() {
            depth += bracket_depth(value_part);
        }
    }
    Located {
        key: None,
        secret: true,
        values,
    }
}

fn join(table: &str, name: &str) -> String {
    if table.is_empty() {
        name.to_owned()
    } else {
        format!("{table}.{name}")
    }
}

/// Keys whose values are secrets, by name (loosely: a misspelt key is still
/// caught, and masking a harmless value only costs the echo).
fn is_secret_key(path: &str) -> bool {
    let path = path.to_ascii_lowercase();
    let last = path.rsplit('.').next().unwrap_or(&path);
    path.starts_with("broker.client_secrets")
        || ["secr", "pass", "pwd", "key", "token", "cred"]
            .iter()
            .any(|word| last.contains(word))
}

/// `scheme://user:pass@host`: the user info is a secret.
fn has_userinfo(line: &str) -> bool {
    line.split("://").skip(1).any(|rest| {
        rest.split(['/', '"', '\'', ' '])
            .next()
            .is_some_and(|a| a.contains('@'))
    })
}

/// The values of every secret line, for an error without a position.
fn secret_values(text: &str) -> Vec<String> {
    let lines = text.split('\n').count();
    (0..lines)
        .map(|line| locate(text, line))
        .filter(|located| located.secret)
        .flat_map(|located| located.values)
        .collect()
}

/// How `[`/`{` outnumber `]`/`}` outside strings on one line.
fn bracket_depth(text: &str) -> i32 {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => break,
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            _ => {}
        }
    }
    depth
}

/// Replaces every quoted part of `message` (`"…"`, `'…'` or `` `…` ``) that
/// occurs in one of `values` by `***`, except exactly `keep` (the key's name).
fn mask_values(message: &str, values: &[String], keep: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find(['"', '\'', '`']) {
        let quote = rest[open..].chars().next().unwrap_or('"');
        let after = &rest[open + 1..];
        let Some(close) = after.find(quote) else {
            break;
        };
        let quoted = &after[..close];
        out.push_str(&rest[..=open]);
        let secret = quoted != keep
            && quoted.chars().count() >= 2
            && values.iter().any(|v| v.contains(quoted));
        out.push_str(if secret { "***" } else { quoted });
        out.push(quote);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

fn floor_char_boundary(text: &str, index: usize) -> usize {
    let mut index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

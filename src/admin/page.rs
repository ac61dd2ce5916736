//! The status page as HTML, for a person: one self-contained document
//! (inline CSS, no script, no external resource) with a table per tenant,
//! state badges, SFMC's last error in full, a login tenant's command, and a
//! "drop cached token" form per key. Every text from outside — tenant names,
//! scopes, SFMC's error text — is escaped. And the headers that lock the
//! page down. The style is `page.css`, inlined.

use std::fmt::Write as _;
use std::time::Duration;

use http::request::Parts;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::Value;

use super::status::{KeyRow, Status, TenantRow, error_json, rfc3339};
use crate::body::ProxyBody;
use crate::readiness::State;
use crate::route::{LOGIN_PATH, STATUS_DROP_PATH, STATUS_PATH};

/// No script, no outside resource, forms only to the proxy, no framing.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What was just dropped, from the redirect's query, shown above the tables.
pub struct Notice {
    pub tenant: String,
    pub account_id: Option<String>,
    pub scope: Option<String>,
}

impl Notice {
    /// Only for a configured tenant: the page never repeats made-up names.
    pub fn from_query(parts: &Parts, status: &Status) -> Option<Notice> {
        let query = parts.uri.query()?;
        let field = |wanted: &str| {
            form_urlencoded::parse(query.as_bytes())
                .find(|(name, _)| name == wanted)
                .map(|(_, value)| value.into_owned())
                .filter(|value| !value.is_empty())
        };
        let tenant = field("dropped")?;
        status
            .tenants
            .iter()
            .any(|t| *t.name == *tenant)
            .then(|| Notice {
                tenant,
                account_id: field("account_id"),
                scope: field("scope"),
            })
    }
}

/// The page, with its headers.
pub fn response(status: &Status, notice: Option<&Notice>) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(render(status, notice)));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    let fixed = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
        // Not `no-referrer`: with it Chromium sends `Origin: null` on the
        // page's own form posts, which the guard refuses as cross-site.
        // `same-origin` still gives no other origin a referrer.
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::VARY, "Accept"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Text made safe for HTML content and quoted attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn render(status: &Status, notice: Option<&Notice>) -> String {
    let mut html = String::with_capacity(8 * 1024);
    html.push_str(HEAD);
    html.push_str(STYLE);
    html.push_str(AFTER_STYLE);
    let _ = write!(
        html,
        "<header><h1>sfmc-proxy <span>status</span></h1><p class=\"meta\">version {} · up {} · as of {} · \
         <a href=\"{STATUS_PATH}\">reload</a> · <a href=\"{STATUS_PATH}?format=json\">JSON</a></p></header>\n<main>\n",
        esc(status.version),
        human(status.uptime),
        rfc3339(status.generated_at),
    );
    if let Some(notice) = notice {
        let _ = write!(
            html,
            "<p class=\"notice\" role=\"status\">Dropped the cached token of <b>{}</b> · {} · {}. \
             The next request fetches a new one.</p>",
            esc(&notice.tenant),
            business_unit(notice.account_id.as_deref()),
            scope_asked(notice.scope.as_deref()),
        );
    }
    for tenant in &status.tenants {
        tenant_section(&mut html, tenant, &status.form_token);
    }
    html.push_str(
        "</main>\n<footer>This page never shows a token, a client secret or a refresh token. \
         Dropping a cached token makes the next request for that key fetch a new one \
         (a package's changed scopes take up to 5 minutes to show in SFMC's tokens).</footer>\n</body>\n</html>\n",
    );
    html
}

fn tenant_section(html: &mut String, tenant: &TenantRow, form_token: &str) {
    let name = esc(&tenant.name);
    let state = tenant.state.as_str();
    let _ = write!(
        html,
        "<section class=\"tenant\" data-tenant=\"{name}\">\n<h2><span class=\"name\">{name}</span> \
         <span class=\"badge {state}\" data-state=\"{state}\">{}</span> <span class=\"grant\">{}</span></h2>\n",
        state_label(tenant.state),
        esc(tenant.grant),
    );
    if let Some(command) = &tenant.login_command {
        let _ = write!(
            html,
            "<div class=\"login\">A person must log in: run <code class=\"command\">{}</code> \
             or <a href=\"{LOGIN_PATH}?tenant={}\">log in from this browser</a>.</div>",
            esc(command),
            esc(&form_urlencoded::byte_serialize(tenant.name.as_bytes()).collect::<String>()),
        );
    } else if let Some(problem) = &tenant.problem {
        html.push_str("<div class=\"problem\">");
        error_text(html, &error_json(problem));
        html.push_str("</div>\n");
    }
    if tenant.keys.is_empty() {
        html.push_str("<p class=\"empty\">No token has been asked for yet.</p>\n</section>\n");
        return;
    }
    html.push_str(
        "<table>\n<thead><tr><th>Business unit</th><th>Scope asked</th><th>Token</th>\
         <th>Granted scope</th><th>Last refresh</th><th>Last error</th><th class=\"num\">Requests</th>\
         <th class=\"num\">Errors</th><th></th></tr></thead>\n<tbody>\n",
    );
    for key in &tenant.keys {
        key_row(html, key, form_token);
    }
    html.push_str("</tbody>\n</table>\n</section>\n");
}

fn key_row(html: &mut String, row: &KeyRow, form_token: &str) {
    let (mid, scope) = (row.key.account_id.as_deref(), row.key.scope.as_deref());
    let _ = write!(
        html,
        "<tr data-account-id=\"{}\" data-scope=\"{}\"><td>{}{}</td><td>{}</td>",
        esc(mid.unwrap_or_default()),
        esc(scope.unwrap_or_default()),
        business_unit(mid),
        if row.default {
            " <span class=\"tag\">default</span>"
        } else {
            ""
        },
        scope_asked(scope),
    );
    token_cells(html, row);
    error_cell(html, row);
    let (requests, errors) = row.counts;
    let _ = write!(
        html,
        "<td class=\"num requests\">{requests}</td><td class=\"num errors\">{errors}</td><td>\
         <form method=\"post\" action=\"{STATUS_DROP_PATH}\">\
         <input type=\"hidden\" name=\"tenant\" value=\"{}\">\
         <input type=\"hidden\" name=\"account_id\" value=\"{}\">\
         <input type=\"hidden\" name=\"scope\" value=\"{}\">\
         <input type=\"hidden\" name=\"form_token\" value=\"{}\">\
         <button type=\"submit\">drop cached token</button></form></td></tr>",
        esc(&row.key.tenant),
        esc(mid.unwrap_or_default()),
        esc(scope.unwrap_or_default()),
        esc(form_token),
    );
    html.push('\n');
}

/// Token, granted scope and last refresh.
fn token_cells(html: &mut String, row: &KeyRow) {
    match &row.token {
        Some(token) => {
            let left = if token.expires_in.is_zero() {
                "<b class=\"bad\">expired</b>".to_owned()
            } else {
                format!("expires in {}", human(token.expires_in))
            };
            let _ = write!(
                html,
                "<td class=\"token\">age {} · {left}<br><small>refresh in {} · {}</small></td><td class=\"granted\">{}</td>",
                human(token.age),
                human(token.refresh_in),
                esc(&token.rest_host),
                token.granted_scope.as_deref().map_or("—".to_owned(), esc),
            );
        }
        None => {
            html.push_str("<td class=\"token\"><span class=\"none\">no token</span></td><td>—</td>")
        }
    }
    match row.last_success {
        Some(at) => {
            let _ = write!(html, "<td>{} ago</td>", human(at.ago));
        }
        None => html.push_str("<td>never</td>"),
    }
}

fn error_cell(html: &mut String, row: &KeyRow) {
    html.push_str("<td class=\"error\">");
    match &row.last_error {
        Some(error) => {
            short_error_text(html, &error_json(&error.error));
            let _ = write!(html, "<small>{} ago", human(error.when.ago));
            if let Some(backoff) = row.backoff.filter(|b| b.as_secs() > 0) {
                let _ = write!(html, " · asks SFMC again in {}", human(backoff));
            }
            html.push_str("</small>");
        }
        None => html.push('—'),
    }
    html.push_str("</td>");
}

/// The proxy's message, then SFMC's own words in full, then a login command.
fn error_text(html: &mut String, body: &Value) {
    if let Some(message) = body.get("message").and_then(Value::as_str) {
        let _ = write!(html, "<p class=\"message\">{}</p>", esc(message));
    }
    sfmc_words(html, body);
}

/// In a key's row: SFMC's own words in full where SFMC refused, else the
/// proxy's message (an outage, a login to run).
fn short_error_text(html: &mut String, body: &Value) {
    if body.get("sfmc_error").is_some() {
        sfmc_words(html, body);
    } else {
        error_text(html, body);
    }
}

fn sfmc_words(html: &mut String, body: &Value) {
    let field = |name: &str| body.get(name).and_then(Value::as_str);
    if let Some(sfmc_error) = field("sfmc_error") {
        let status = body.get("sfmc_status").and_then(Value::as_u64);
        let _ = write!(
            html,
            "<p class=\"sfmc\">SFMC said{}: <code>{}</code>",
            status.map_or(String::new(), |s| format!(" (HTTP {s})")),
            esc(sfmc_error),
        );
        if let Some(description) = field("sfmc_error_description") {
            let _ = write!(html, " <q>{}</q>", esc(description));
        }
        html.push_str("</p>");
    }
    if let Some(command) = field("command") {
        let _ = write!(
            html,
            "<p>Run <code class=\"command\">{}</code></p>",
            esc(command)
        );
    }
}

fn state_label(state: State) -> &'static str {
    match state {
        State::Ready => "ready",
        State::Starting => "starting",
        State::LoginRequired => "login required",
        State::Failing => "failing",
        State::Degraded => "degraded",
    }
}

fn business_unit(mid: Option<&str>) -> String {
    mid.map_or("<em>the package's own</em>".to_owned(), |mid| {
        format!("MID {}", esc(mid))
    })
}

fn scope_asked(scope: Option<&str>) -> String {
    scope.map_or("<em>all the package's</em>".to_owned(), |s| {
        format!("<code>{}</code>", esc(s))
    })
}

/// "42s", "3m 12s", "14m", "2h 5m", "3d 4h": as precise as a person needs.
pub fn human(duration: Duration) -> String {
    let s = duration.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..600 => format!("{}m {}s", s / 60, s % 60),
        600..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

const HEAD: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sfmc-proxy status</title>
<style>
"#;

/// Inlined: the page loads nothing from elsewhere.
const STYLE: &str = include_str!("page.css");

const AFTER_STYLE: &str = r#"</style>
</head>
<body>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_a_person_says_them() {
        let cases = [
            (0, "0s"),
            (42, "42s"),
            (192, "3m 12s"),
            (840, "14m"),
            (7500, "2h 5m"),
            (273_600, "3d 4h"),
        ];
        for (secs, text) in cases {
            assert_eq!(human(Duration::from_secs(secs)), text);
        }
    }

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }
}

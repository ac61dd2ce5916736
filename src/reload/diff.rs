//! What a new configuration changes against the running one: the tenants
//! added, removed, with new credentials (their tokens no longer mean what
//! they did) or kept, whether the upstream client must be rebuilt, and the
//! keys that only a restart applies. Pure: no I/O, unit-tested.

use std::fmt;
use std::sync::Arc;

use crate::config::{Settings, Tenant};

/// Keys a running process cannot apply: the listening sockets are bound and
/// the runtime's threads started before any reload.
const RESTART_ONLY: [&str; 3] = [
    "server.listen",
    "server.admin_listen",
    "server.worker_threads",
];

/// The difference between two configurations, as a reload applies it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// New tenants: they serve at once.
    pub added: Vec<Arc<str>>,
    /// Gone: their tokens, local tokens and logins are dropped; requests
    /// for them answer `unknown_tenant`.
    pub removed: Vec<Arc<str>>,
    /// Another `auth_url`, `client_id`, secret or grant: their tokens,
    /// local tokens and logins are dropped, the next request fetches anew.
    pub credentials_changed: Vec<Arc<str>>,
    /// Same credentials: their tokens are kept (other keys of theirs, such
    /// as `scope` or `path_prefix`, apply to new requests).
    pub kept: Vec<Arc<str>>,
    /// `[upstream]` changed: new requests use a new upstream client.
    pub upstream: bool,
    /// `upstream.allowed_instance_hosts` changed: every cached token was
    /// checked against the old list only, so all are dropped.
    pub instance_hosts: bool,
    /// Keys that changed but apply only after a restart.
    pub needs_restart: Vec<&'static str>,
}

impl Changes {
    /// From `old` to `new`; the restart-only keys are compared with
    /// `started`, the settings the process started with (what is bound), so
    /// they are reported at every reload until a restart applies them.
    pub fn between(old: &Settings, new: &Settings, started: &Settings) -> Self {
        let mut changes = Self::default();
        for tenant in &new.tenants {
            match old.tenant(&tenant.name) {
                None => changes.added.push(tenant.name.clone()),
                Some(before) if same_credentials(before, tenant) => {
                    changes.kept.push(tenant.name.clone());
                }
                Some(_) => changes.credentials_changed.push(tenant.name.clone()),
            }
        }
        changes.removed = old
            .tenants
            .iter()
            .filter(|t| new.tenant(&t.name).is_none())
            .map(|t| t.name.clone())
            .collect();
        changes.upstream = old.upstream != new.upstream;
        changes.instance_hosts =
            old.upstream.allowed_instance_hosts != new.upstream.allowed_instance_hosts;
        let restart = [
            started.server.listen != new.server.listen,
            started.server.admin_listen != new.server.admin_listen,
            started.server.worker_threads != new.server.worker_threads,
        ];
        changes.needs_restart = RESTART_ONLY
            .iter()
            .zip(restart)
            .filter(|(_, changed)| *changed)
            .map(|(key, _)| *key)
            .collect();
        changes
    }

    /// Whether what was had for `tenant` (tokens, local tokens, a waiting
    /// login, its backoff and rate-limit state) came from credentials that
    /// are no longer configured: it was removed or its credentials changed.
    pub fn credentials_void(&self, tenant: &str) -> bool {
        !self.kept.iter().any(|t| &**t == tenant)
    }

    /// Whether cached tokens of `tenant` must go: its credentials are void,
    /// or the instance hosts they were checked against changed.
    pub fn tokens_void(&self, tenant: &str) -> bool {
        self.instance_hosts || self.credentials_void(tenant)
    }
}

/// Whether a tool proves itself to the broker for `tenant` the same way in
/// both: the same `broker.client_secrets` entry (or, without one, the same
/// accept-any rule), and the same inbound keys (a local token stands in for
/// the key of whoever asked for it, so rotating a key retires them all).
pub fn same_local_admission(old: &Settings, new: &Settings, tenant: &str) -> bool {
    let (a, b) = (&old.broker, &new.broker);
    let secret = |broker: &crate::config::BrokerSettings| {
        let own = broker.client_secrets.get(tenant);
        (own.cloned(), own.is_none() && broker.accept_any_secret)
    };
    secret(a) == secret(b) && old.server.inbound_keys == new.server.inbound_keys
}

/// Whether a token fetched for `a` means the same for `b`: the same token
/// endpoint, package, secret and grant (redirect URI, app type, PKCE).
pub fn same_credentials(a: &Tenant, b: &Tenant) -> bool {
    a.token_url == b.token_url
        && a.client_id == b.client_id
        && a.client_secret == b.client_secret
        && a.grant == b.grant
}

impl fmt::Display for Changes {
    /// One line: `tenants added [x], removed [], credentials changed [],
    /// kept [y]; upstream client rebuilt`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |names: &[Arc<str>]| {
            let names: Vec<&str> = names.iter().map(|n| &**n).collect();
            format!("[{}]", names.join(", "))
        };
        write!(
            f,
            "tenants added {}, removed {}, credentials changed {}, kept {}",
            list(&self.added),
            list(&self.removed),
            list(&self.credentials_changed),
            list(&self.kept)
        )?;
        if self.upstream {
            f.write_str("; upstream client rebuilt")?;
        }
        if self.instance_hosts {
            f.write_str(
                "; upstream.allowed_instance_hosts changed, so every cached token was dropped",
            )?;
        }
        if !self.needs_restart.is_empty() {
            write!(
                f,
                "; changed but needing a restart to apply: {}",
                self.needs_restart.join(", ")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn settings(text: &str) -> Settings {
        Settings::from_toml(text, |_| None, Path::new(".")).expect("valid")
    }

    fn tenant(name: &str, secret: &str) -> String {
        format!(
            "[tenants.{name}]\nauth_url = \"https://mc1.auth.marketingcloudapis.com/\"\nclient_id = \"id\"\nclient_secret = \"{secret}\"\n"
        )
    }

    #[test]
    fn tenants_are_told_apart_by_their_credentials() {
        let old = settings(&format!(
            "{}{}{}",
            tenant("a", "one"),
            tenant("b", "two"),
            tenant("c", "three")
        ));
        let new = settings(&format!(
            "{}scope = \"email_read\"\n{}{}",
            tenant("a", "one"),
            tenant("b", "changed"),
            tenant("d", "four")
        ));
        let changes = Changes::between(&old, &new, &old);
        let names = |list: &[Arc<str>]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&changes.kept), ["a"], "a scope is not a credential");
        assert_eq!(names(&changes.credentials_changed), ["b"]);
        assert_eq!(names(&changes.added), ["d"]);
        assert_eq!(names(&changes.removed), ["c"]);
        assert!(!changes.upstream && changes.needs_restart.is_empty());
        assert!(!changes.tokens_void("a"));
        assert!(changes.tokens_void("b") && changes.tokens_void("c"));
        assert_eq!(
            changes.to_string(),
            "tenants added [d], removed [c], credentials changed [b], kept [a]"
        );
    }

    #[test]
    fn local_admission_changes_with_the_local_secret_or_the_inbound_keys() {
        let base = tenant("a", "one");
        let old = settings(&base);
        let keyed = settings(&format!(
            "[server]\ninbound_keys = [\"0123456789abcdef\"]\n{base}"
        ));
        let secret = settings(&format!(
            "[broker.client_secrets]\na = \"local-secret-0123456\"\n{base}"
        ));
        assert!(same_local_admission(&old, &settings(&base), "a"));
        assert!(!same_local_admission(&old, &keyed, "a"), "keys rotated");
        assert!(
            !same_local_admission(&old, &secret, "a"),
            "a local secret now"
        );
    }

    #[test]
    fn listen_and_threads_need_a_restart_and_upstream_changes_are_seen() {
        let old = settings(&tenant("a", "one"));
        let new = settings(&format!(
            "[server]\nlisten = \"127.0.0.1:9999\"\nadmin_listen = \"127.0.0.1:9998\"\nworker_threads = 2\n[upstream]\nallowed_instance_hosts = [\".example.com\"]\n{}",
            tenant("a", "one")
        ));
        let changes = Changes::between(&old, &new, &old);
        assert_eq!(
            changes.needs_restart,
            [
                "server.listen",
                "server.admin_listen",
                "server.worker_threads"
            ]
        );
        let again = Changes::between(&new, &new, &old);
        assert_eq!(again.needs_restart.len(), 3, "until a restart");
        assert!(changes.upstream && changes.instance_hosts);
        assert!(
            changes.tokens_void("a"),
            "tokens checked against the old list"
        );
        assert!(!changes.credentials_void("a"));
        assert!(
            changes
                .to_string()
                .contains("needing a restart to apply: server.listen")
        );
    }
}

//! Optional bearer-token authentication, with two rights: search and admin.
//!
//! Search tokens (`--auth-tokens-file`, `TANDEM_AUTH_TOKENS`) grant `tandem.v1.Search` and
//! reflection; admin tokens (`--admin-tokens-file`, `TANDEM_ADMIN_TOKENS`) grant
//! `tandem.v1.Admin` (deletes, reloads) and search too. A call must carry `authorization:
//! Bearer <token>`:
//!
//! | Call | no or unknown token | search token | admin token |
//! |---|---|---|---|
//! | Search, reflection | UNAUTHENTICATED | served | served |
//! | Admin | UNAUTHENTICATED | PERMISSION_DENIED | served |
//!
//! Search is open (no token asked) when no search token is configured; Admin is open only when
//! no token of either kind is configured (auth off: the server warns at start). With search
//! tokens but no admin token, Admin calls are refused with PERMISSION_DENIED: configuring search
//! credentials never leaves writes open. Health checks are never guarded (load balancers probe
//! without credentials). Tokens come from a file (one per line; blank lines and `#` comments
//! ignored) and/or an environment variable (comma-separated); they are compared in constant
//! time and never logged.

use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// The accepted tokens.
#[derive(Clone)]
pub struct Tokens(Arc<Vec<Vec<u8>>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured, values masked)", self.0.len())
    }
}

impl Tokens {
    /// Tokens from a file (`path`) and/or a comma-separated list (`list`); `None` when neither
    /// gives one. A given file that is unreadable or holds no token is an error naming `what`
    /// (e.g. "auth tokens").
    pub fn load(
        path: Option<&Path>,
        list: Option<&str>,
        what: &str,
    ) -> anyhow::Result<Option<Tokens>> {
        let mut tokens: Vec<Vec<u8>> = Vec::new();
        if let Some(path) = path {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
            let before = tokens.len();
            tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(|l| l.as_bytes().to_vec()),
            );
            anyhow::ensure!(
                tokens.len() > before,
                "{}: no token in the {what} file",
                path.display()
            );
        }
        if let Some(list) = list {
            tokens.extend(
                list.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| t.as_bytes().to_vec()),
            );
        }
        Ok((!tokens.is_empty()).then(|| Tokens(Arc::new(tokens))))
    }

    /// A set of the given tokens.
    pub fn new(tokens: impl IntoIterator<Item = String>) -> Tokens {
        Tokens(Arc::new(
            tokens.into_iter().map(String::into_bytes).collect(),
        ))
    }

    /// Whether `candidate` is one of the tokens (constant time in the candidate's content).
    fn accepts(&self, candidate: &[u8]) -> bool {
        let mut found = subtle::Choice::from(0);
        for token in self.0.iter() {
            found |= token.as_slice().ct_eq(candidate);
        }
        found.into()
    }
}

/// The tokens of both rights (`None`: none of that kind configured).
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// Tokens granting search.
    pub search: Option<Tokens>,
    /// Tokens granting admin calls, and search.
    pub admin: Option<Tokens>,
}

/// What a bearer token grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Granted {
    Nothing,
    Search,
    Admin,
}

impl Credentials {
    /// Whether no token of either kind is configured: everything is open.
    pub fn is_off(&self) -> bool {
        self.search.is_none() && self.admin.is_none()
    }

    /// What `token` grants. Both sets are always checked, so the time taken does not tell which
    /// set (if any) holds the token.
    fn granted(&self, token: &[u8]) -> Granted {
        let search = self.search.as_ref().is_some_and(|t| t.accepts(token));
        let admin = self.admin.as_ref().is_some_and(|t| t.accepts(token));
        match (admin, search) {
            (true, _) => Granted::Admin,
            (false, true) => Granted::Search,
            (false, false) => Granted::Nothing,
        }
    }
}

/// The interceptor guarding a service: lets a call through when its bearer token grants what the
/// service needs (see the module docs).
#[derive(Clone, Debug)]
pub struct Guard {
    credentials: Credentials,
    admin: bool,
}

impl Guard {
    /// The guard of `tandem.v1.Search` and reflection.
    pub fn search(credentials: Credentials) -> Guard {
        Guard {
            credentials,
            admin: false,
        }
    }

    /// The guard of `tandem.v1.Admin`.
    pub fn admin(credentials: Credentials) -> Guard {
        Guard {
            credentials,
            admin: true,
        }
    }
}

/// The bearer token of `request`, or UNAUTHENTICATED.
fn bearer(request: &Request<()>) -> Result<&[u8], Status> {
    let header = request
        .metadata()
        .get("authorization")
        .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>`"))?;
    header
        .as_bytes()
        .strip_prefix(b"Bearer ")
        .ok_or_else(|| Status::unauthenticated("`authorization` is not `Bearer <token>`"))
}

impl tonic::service::Interceptor for Guard {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let c = &self.credentials;
        let open = match self.admin {
            true => c.is_off(),
            false => c.search.is_none(),
        };
        if open {
            return Ok(request);
        }
        match (c.granted(bearer(&request)?), self.admin) {
            (Granted::Nothing, _) => {
                Err(Status::unauthenticated("the bearer token is not accepted"))
            }
            (Granted::Admin, _) | (Granted::Search, false) => Ok(request),
            (Granted::Search, true) if c.admin.is_none() => Err(Status::permission_denied(
                "admin rights are needed, and this server has no admin credentials configured \
                 (--admin-tokens-file or TANDEM_ADMIN_TOKENS): Admin calls are refused",
            )),
            (Granted::Search, true) => Err(Status::permission_denied(
                "admin rights are needed: this token grants search only (Admin calls take an \
                 admin token)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    fn with_header(value: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(value) = value {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        request
    }

    fn credentials(search: &[&str], admin: &[&str]) -> Credentials {
        let set =
            |t: &[&str]| (!t.is_empty()).then(|| Tokens::new(t.iter().map(|t| t.to_string())));
        Credentials {
            search: set(search),
            admin: set(admin),
        }
    }

    /// The code a guard answers for `header` (`Ok` when it lets the call through).
    fn code(guard: &mut Guard, header: Option<&str>) -> tonic::Code {
        guard
            .call(with_header(header))
            .map_or_else(|s| s.code(), |_| tonic::Code::Ok)
    }

    #[test]
    fn only_configured_bearer_tokens_pass() {
        let mut guard = Guard::search(credentials(&["alpha", "beta"], &[]));
        assert!(guard.call(with_header(Some("Bearer beta"))).is_ok());
        for (header, needle) in [
            (None, "missing"),
            (Some("Basic beta"), "not `Bearer"),
            (Some("Bearer gamma"), "not accepted"),
            (Some("Bearer bet"), "not accepted"),
            (Some("Bearer "), "not accepted"),
        ] {
            let status = guard.call(with_header(header)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert!(status.message().contains(needle), "{header:?}: {status:?}");
        }
        let off = Credentials::default();
        assert!(off.is_off());
        assert!(Guard::search(off.clone()).call(with_header(None)).is_ok());
        assert!(Guard::admin(off).call(with_header(None)).is_ok());
    }

    #[test]
    fn admin_calls_need_an_admin_token_and_admin_tokens_also_search() {
        use tonic::Code::{Ok, PermissionDenied, Unauthenticated};
        let both = credentials(&["reader"], &["writer"]);
        let (mut search, mut admin) = (Guard::search(both.clone()), Guard::admin(both));
        assert_eq!(code(&mut search, Some("Bearer reader")), Ok);
        assert_eq!(code(&mut search, Some("Bearer writer")), Ok);
        assert_eq!(code(&mut admin, Some("Bearer writer")), Ok);
        let status = admin.call(with_header(Some("Bearer reader"))).unwrap_err();
        assert_eq!(status.code(), PermissionDenied);
        assert!(status.message().contains("admin rights"), "{status:?}");
        for header in [None, Some("Bearer nobody"), Some("Bearer writer2")] {
            assert_eq!(code(&mut admin, header), Unauthenticated, "{header:?}");
            assert_eq!(code(&mut search, header), Unauthenticated, "{header:?}");
        }

        // Search tokens but no admin token: Admin is refused, never open.
        let search_only = credentials(&["reader"], &[]);
        let mut admin = Guard::admin(search_only);
        let status = admin.call(with_header(Some("Bearer reader"))).unwrap_err();
        assert_eq!(status.code(), PermissionDenied);
        assert!(
            status.message().contains("no admin credentials"),
            "{status:?}"
        );
        assert_eq!(code(&mut admin, None), Unauthenticated);

        // Admin tokens only: search is open, Admin is not.
        let admin_only = credentials(&[], &["writer"]);
        assert_eq!(code(&mut Guard::search(admin_only.clone()), None), Ok);
        let mut admin = Guard::admin(admin_only);
        assert_eq!(code(&mut admin, None), Unauthenticated);
        assert_eq!(code(&mut admin, Some("Bearer reader")), Unauthenticated);
        assert_eq!(code(&mut admin, Some("Bearer writer")), Ok);
    }

    #[test]
    fn tokens_load_from_file_and_list_and_are_masked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "# clients\nalpha\n\n  beta  \n").unwrap();
        let tokens = Tokens::load(Some(&file), Some("gamma, ,delta"), "auth tokens")
            .unwrap()
            .unwrap();
        for t in ["alpha", "beta", "gamma", "delta"] {
            assert!(tokens.accepts(t.as_bytes()), "{t}");
        }
        assert!(!format!("{tokens:?}").contains("alpha"));
        assert!(Tokens::load(None, Some(" , "), "auth tokens")
            .unwrap()
            .is_none());
        std::fs::write(&file, "# none\n").unwrap();
        let empty = Tokens::load(Some(&file), None, "admin tokens").unwrap_err();
        assert!(empty
            .to_string()
            .contains("no token in the admin tokens file"));
        let missing = Tokens::load(Some(&dir.path().join("missing")), None, "admin tokens");
        assert!(format!("{:#}", missing.unwrap_err()).contains("admin tokens file"));
    }
}

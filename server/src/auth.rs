//! Optional bearer-token authentication.
//!
//! With tokens configured, every call of `tandem.v1.Search`, `tandem.v1.Admin` and reflection
//! must carry `authorization: Bearer <token>` with one of them, or it is refused with
//! UNAUTHENTICATED before any work. Health checks stay open (load balancers probe without
//! credentials). Tokens come from a file (one per line; blank lines and `#` comments ignored)
//! and/or an environment variable (comma-separated); they are compared in constant time and
//! never logged.

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
    /// gives one (auth off). A given file that is unreadable or holds no token is an error.
    pub fn load(path: Option<&Path>, list: Option<&str>) -> anyhow::Result<Option<Tokens>> {
        let mut tokens: Vec<Vec<u8>> = Vec::new();
        if let Some(path) = path {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the auth tokens file {}", path.display()))?;
            let before = tokens.len();
            tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(|l| l.as_bytes().to_vec()),
            );
            anyhow::ensure!(
                tokens.len() > before,
                "{}: no token in the auth tokens file",
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

/// The interceptor guarding a service: `None` lets everything through.
#[derive(Clone, Debug)]
pub struct Guard(pub Option<Tokens>);

impl tonic::service::Interceptor for Guard {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(tokens) = &self.0 else {
            return Ok(request);
        };
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>`"))?;
        let token = header
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .ok_or_else(|| Status::unauthenticated("`authorization` is not `Bearer <token>`"))?;
        if tokens.accepts(token) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("the bearer token is not accepted"))
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

    #[test]
    fn only_configured_bearer_tokens_pass() {
        let mut guard = Guard(Some(Tokens::new(["alpha".into(), "beta".into()])));
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
        assert!(Guard(None).call(with_header(None)).is_ok());
    }

    #[test]
    fn tokens_load_from_file_and_list_and_are_masked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "# clients\nalpha\n\n  beta  \n").unwrap();
        let tokens = Tokens::load(Some(&file), Some("gamma, ,delta"))
            .unwrap()
            .unwrap();
        for t in ["alpha", "beta", "gamma", "delta"] {
            assert!(tokens.accepts(t.as_bytes()), "{t}");
        }
        assert!(!format!("{tokens:?}").contains("alpha"));
        assert!(Tokens::load(None, Some(" , ")).unwrap().is_none());
        std::fs::write(&file, "# none\n").unwrap();
        assert!(Tokens::load(Some(&file), None).is_err());
        assert!(Tokens::load(Some(&dir.path().join("missing")), None).is_err());
    }
}

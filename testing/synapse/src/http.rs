//! Plain-HTTP JSON requests to the homeserver.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::Error;

/// A homeserver address and an HTTP agent (cheap to clone).
#[derive(Clone)]
pub(crate) struct Http {
    agent: ureq::Agent,
    base_url: String,
}

/// The HTTP methods the harness uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

impl Http {
    pub(crate) fn new(base_url: &str, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Http {
            agent,
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }

    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends a request and returns the status and body of any answer; only a failure to send
    /// or to read is an error.
    pub(crate) fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, String), Error> {
        let url = format!("{}{}", self.base_url, path);
        let auth = token.map(|t| format!("Bearer {t}"));
        let transport = |source: ureq::Error| Error::Transport {
            method: method.as_str(),
            path: path.to_string(),
            source: Box::new(source),
        };
        let result = match method {
            Method::Get | Method::Delete => {
                let mut rb = if method == Method::Get {
                    self.agent.get(&url)
                } else {
                    self.agent.delete(&url)
                };
                if let Some(a) = &auth {
                    rb = rb.header("Authorization", a);
                }
                rb.call()
            }
            Method::Post | Method::Put => {
                let mut rb = if method == Method::Post {
                    self.agent.post(&url)
                } else {
                    self.agent.put(&url)
                };
                if let Some(a) = &auth {
                    rb = rb.header("Authorization", a);
                }
                match body {
                    Some(b) => rb.send_json(b),
                    None => rb.send_json(serde_json::json!({})),
                }
            }
        };
        let mut response = result.map_err(transport)?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(transport)?;
        Ok((status, text))
    }

    /// Sends a request; a 2xx answer's body is returned as text, anything else is an
    /// [`Error::Status`].
    pub(crate) fn text(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<String, Error> {
        let (status, text) = self.send(method, path, token, body)?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            let errcode = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("errcode")?.as_str().map(str::to_string));
            Err(Error::Status {
                method: method.as_str(),
                path: path.to_string(),
                status,
                errcode,
                body: text,
            })
        }
    }

    /// Like [`Http::text`], parsed as JSON.
    pub(crate) fn json(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let text = self.text(method, path, token, body)?;
        serde_json::from_str(&text).map_err(|e| Error::Response {
            method: method.as_str(),
            path: path.to_string(),
            reason: format!("not JSON ({e})"),
        })
    }
}

/// `s` percent-encoded for one path segment or query value (everything but RFC 3986's
/// unreserved characters is encoded).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A transaction id unique in this process and across processes (a random prefix).
pub(crate) fn txn_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| crate::appservice::random_token()[..12].to_string());
    format!("prr{}.{}", prefix, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// `field` of a JSON answer as a string, or an [`Error::Response`].
pub(crate) fn field(v: &Value, field: &str, method: Method, path: &str) -> Result<String, Error> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Error::Response {
            method: method.as_str(),
            path: path.to_string(),
            reason: format!("no string `{field}` in {v}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_matrix_ids() {
        assert_eq!(encode("!abc:x.org"), "%21abc%3Ax.org");
        assert_eq!(encode("@u:x"), "%40u%3Ax");
        assert_eq!(encode("$e/+="), "%24e%2F%2B%3D");
        assert_eq!(encode(""), "");
    }

    #[test]
    fn txn_ids_differ() {
        assert_ne!(txn_id(), txn_id());
    }
}

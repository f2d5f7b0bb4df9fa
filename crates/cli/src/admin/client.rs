//! The HTTP side of the admin commands: one request, its JSON answer or a failure to print.

use std::fmt;
use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode, Url};
use serde_json::Value;

use super::ServerArgs;

/// How long one request may take before the command gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a command failed, as the operator reads it.
#[derive(Debug)]
pub enum Failure {
    /// The server answered with an API error.
    Api {
        code: String,
        message: String,
    },
    /// Nothing answered at the address.
    Connect {
        url: String,
        cause: String,
    },
    Other(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Api { code, message } => write!(f, "error: {code}: {message}"),
            Failure::Connect { url, cause } => {
                write!(
                    f,
                    "error: cannot connect to the server at {url} ({cause}); is it running? (--url, STAMPEDE_URL)"
                )
            }
            Failure::Other(message) => write!(f, "error: {message}"),
        }
    }
}

pub struct Client {
    http: reqwest::Client,
    base: Url,
    admin_token: Option<String>,
}

impl Client {
    pub fn new(server: &ServerArgs) -> Result<Self, Failure> {
        let base = Url::parse(&server.url).map_err(|error| Failure::Other(format!("--url {}: {error}", server.url)))?;
        if base.scheme() != "http" || base.cannot_be_a_base() {
            return Err(Failure::Other(format!("--url {}: must be an http:// address", server.url)));
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|error| Failure::Other(format!("cannot build the HTTP client: {error}")))?;
        let admin_token = server.admin_token.clone().filter(|token| !token.is_empty());
        Ok(Self { http, base, admin_token })
    }

    /// `GET` of the path made of `segments` (each percent-encoded), with `?status=` if given.
    pub async fn get(&self, segments: &[&str], status: Option<&str>) -> Result<Value, Failure> {
        let mut url = self.url(segments);
        if let Some(status) = status {
            url.query_pairs_mut().append_pair("status", status);
        }
        self.send(self.http.get(url)).await
    }

    pub async fn post(&self, segments: &[&str], body: &Value) -> Result<Value, Failure> {
        self.send(self.http.post(self.url(segments)).json(body)).await
    }

    pub async fn delete(&self, segments: &[&str]) -> Result<Value, Failure> {
        self.send(self.http.delete(self.url(segments))).await
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        // `new` checked that the base can have path segments.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// The answer's JSON (`null` for an empty body) on success, the API error otherwise.
    async fn send(&self, request: RequestBuilder) -> Result<Value, Failure> {
        let request = match &self.admin_token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.map_err(|error| self.transport(&error))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|error| self.transport(&error))?;
        if !status.is_success() {
            return Err(self.api_failure(status, &body));
        }
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body)
            .map_err(|error| Failure::Other(format!("the server answered {status} with malformed JSON: {error}")))
    }

    fn api_failure(&self, status: StatusCode, body: &[u8]) -> Failure {
        let error = serde_json::from_slice::<Value>(body).ok().map(|mut answer| answer["error"].take());
        let text = |field: &str| error.as_ref().and_then(|error| error[field].as_str()).map(str::to_owned);
        let (Some(code), Some(mut message)) = (text("code"), text("message")) else {
            return Failure::Other(format!("the server answered {status} without an API error"));
        };
        if code == "unauthorized" && self.admin_token.is_none() {
            message.push_str(" (pass --admin-token or set STAMPEDE_ADMIN_TOKEN)");
        }
        Failure::Api { code, message }
    }

    fn transport(&self, error: &reqwest::Error) -> Failure {
        let url = self.base.as_str().trim_end_matches('/').to_owned();
        if error.is_connect() {
            return Failure::Connect { url, cause: root_cause(error) };
        }
        if error.is_timeout() {
            return Failure::Other(format!("no answer from {url} within {} s", REQUEST_TIMEOUT.as_secs()));
        }
        Failure::Other(format!("request to {url} failed: {}", root_cause(error)))
    }
}

/// The innermost error: "connection refused" rather than "error sending request".
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

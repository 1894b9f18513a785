//! The CLI's HTTP client and its stored credentials.
//!
//! Tokens live in `$SALLYPORT_CONFIG_DIR` (default `$XDG_CONFIG_HOME/sallyport` or
//! `~/.config/sallyport`) in `credentials.json`, mode 0600, keyed by server URL and profile.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A failed API call.
#[derive(Debug)]
pub struct ClientError {
    /// HTTP status, 0 when the server was not reached.
    pub status: u16,
    /// The API's error code.
    pub code: String,
    /// Its message.
    pub message: String,
    /// The request id to quote.
    pub request_id: Option<String>,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        Ok(())
    }
}

/// Where credentials are kept.
pub fn config_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("SALLYPORT_CONFIG_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("sallyport"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config").join("sallyport"))
}

/// One stored login.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredToken {
    /// The token (a secret).
    pub token: String,
    /// Its id (to revoke it).
    pub token_id: String,
    /// Who it is.
    pub user: String,
    /// When it stops working.
    pub expires_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CredentialsFile {
    #[serde(default)]
    logins: BTreeMap<String, StoredToken>,
}

fn key(server: &str, profile: &str) -> String {
    format!("{} {profile}", server.trim_end_matches('/'))
}

fn creds_path() -> Result<PathBuf, String> {
    config_dir()
        .map(|d| d.join("credentials.json"))
        .ok_or_else(|| "cannot find a config directory: set HOME or SALLYPORT_CONFIG_DIR".into())
}

fn read_creds() -> Result<CredentialsFile, String> {
    let path = creds_path()?;
    match std::fs::read_to_string(&path) {
        Ok(t) => serde_json::from_str(&t).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CredentialsFile::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Write a file readable by its owner only, atomically.
pub fn write_private(path: &std::path::Path, data: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn write_creds(c: &CredentialsFile) -> Result<(), String> {
    let path = creds_path()?;
    let text = serde_json::to_vec_pretty(c).map_err(|e| e.to_string())?;
    write_private(&path, &text)
}

/// The stored login for a server and profile.
pub fn load_token(server: &str, profile: &str) -> Result<Option<StoredToken>, String> {
    Ok(read_creds()?.logins.get(&key(server, profile)).cloned())
}

/// Store a login.
pub fn save_token(server: &str, profile: &str, t: StoredToken) -> Result<(), String> {
    let mut c = read_creds()?;
    c.logins.insert(key(server, profile), t);
    write_creds(&c)
}

/// Forget a login.
pub fn forget_token(server: &str, profile: &str) -> Result<Option<StoredToken>, String> {
    let mut c = read_creds()?;
    let old = c.logins.remove(&key(server, profile));
    write_creds(&c)?;
    Ok(old)
}

/// A client of one server.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client for `server`, with a token if one is given or stored.
    pub fn new(server: &str, token: Option<String>) -> Result<Self, String> {
        let base = server.trim_end_matches('/').to_owned();
        url::Url::parse(&base).map_err(|e| format!("--server `{server}`: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("sallyport-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Client { base, token, http })
    }

    /// The server URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.map_err(|e| ClientError {
            status: 0,
            code: "unreachable".into(),
            message: format!("cannot reach {}: {}", self.base, root_cause(&e)),
            request_id: None,
        })?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        let v: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(v);
        }
        Err(ClientError {
            status: status.as_u16(),
            code: v["code"].as_str().unwrap_or("http_error").to_owned(),
            message: v["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("the server answered {status}")),
            request_id: v["request_id"].as_str().map(str::to_owned),
        })
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// POST JSON.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.send(reqwest::Method::DELETE, path, None).await
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Percent-encode a path segment.
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

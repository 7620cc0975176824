//! A small blocking WebDriver client for headless Chromium: chromedriver is started on a
//! free port, spoken to over HTTP/1.1 with JSON bodies (std `TcpStream`, `httparse`,
//! `serde_json`), and stopped with the browser when the [`Browser`] is dropped.
//!
//! Only what the browser tests need: navigate, find elements by CSS, click, type, read
//! text and attributes, run a script, take a screenshot, and poll until a condition holds.

#![allow(dead_code)]

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// How long chromedriver and the browser session may take to start.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one WebDriver command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest HTTP response accepted from chromedriver (screenshots are the big ones).
const MAX_RESPONSE: usize = 64 * 1024 * 1024;
/// The W3C element reference key.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Flags for a quiet, self-contained headless Chromium: no sandbox (tests run as root in
/// containers), no GPU, and none of the background traffic a closed network refuses.
pub const CHROMIUM_FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
];

/// Why a WebDriver call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Talking to chromedriver failed.
    #[error("chromedriver I/O: {0}")]
    Io(#[from] io::Error),
    /// chromedriver's answer was not HTTP or not JSON.
    #[error("bad answer from chromedriver: {0}")]
    Protocol(String),
    /// A WebDriver error (`no such element`, `javascript error`, ...).
    #[error("{error} ({status}): {message}")]
    WebDriver {
        /// HTTP status.
        status: u16,
        /// The WebDriver error code.
        error: String,
        /// Its message.
        message: String,
    },
}

impl Error {
    /// True for WebDriver's `no such element`.
    pub fn is_no_such_element(&self) -> bool {
        matches!(self, Error::WebDriver { error, .. } if error == "no such element")
    }
}

/// Paths of the browser and its driver.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The Chromium binary.
    pub chromium: PathBuf,
    /// chromedriver.
    pub chromedriver: PathBuf,
}

impl Tools {
    /// Finds Chromium and chromedriver: `$CHROMIUM` / `$CHROMEDRIVER` if set, else Debian's
    /// paths, else the first match on `PATH`.
    pub fn find() -> Result<Tools, String> {
        let find = |var: &str, names: &[&str]| -> Option<PathBuf> {
            if let Some(p) = std::env::var_os(var) {
                return Some(PathBuf::from(p)).filter(|p| p.is_file());
            }
            for name in names {
                let debian = Path::new("/usr/bin").join(name);
                if debian.is_file() {
                    return Some(debian);
                }
                let on_path = std::env::var_os("PATH").and_then(|paths| {
                    std::env::split_paths(&paths)
                        .map(|dir| dir.join(name))
                        .find(|p| p.is_file())
                });
                if on_path.is_some() {
                    return on_path;
                }
            }
            None
        };
        let chromium = find("CHROMIUM", &["chromium", "chromium-browser"]);
        let chromedriver = find("CHROMEDRIVER", &["chromedriver"]);
        match (chromium, chromedriver) {
            (Some(chromium), Some(chromedriver)) => Ok(Tools {
                chromium,
                chromedriver,
            }),
            (c, d) => Err(format!(
                "headless browser tests need Chromium and chromedriver (missing: {}); \
                 install them with `apt-get install -y chromium chromium-driver` \
                 (scripts/test does it)",
                [("chromium", c.is_none()), ("chromedriver", d.is_none())]
                    .iter()
                    .filter(|(_, missing)| *missing)
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// A headless Chromium driven through chromedriver. Dropping it ends the session and kills
/// chromedriver's whole process group (the browser included), even after a panic.
pub struct Browser {
    driver: Option<Child>,
    addr: SocketAddr,
    session: Option<String>,
    log: PathBuf,
    // Declared last: the profile directory outlives the browser using it.
    profile: tempfile::TempDir,
}

/// A reference to an element on the current page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element(String);

impl fmt::Debug for Browser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Browser")
            .field("addr", &self.addr)
            .field("session", &self.session)
            .finish()
    }
}

impl Browser {
    /// Starts chromedriver on `port` and a fresh browser session with a new profile.
    pub fn start(tools: &Tools, port: u16) -> Result<Browser, String> {
        let profile = tempfile::Builder::new()
            .prefix("chromium-test-")
            .tempdir()
            .map_err(|e| format!("profile dir: {e}"))?;
        let log = profile.path().join("chromedriver.log");
        let mut command = Command::new(&tools.chromedriver);
        command
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so Drop can stop the browsers it starts as well.
            .process_group(0);
        // SAFETY: the closure runs in the child between fork and exec and only calls
        // prctl(2), which is async-signal-safe and touches no memory of ours.
        unsafe {
            // If the test process dies without dropping the Browser, chromedriver goes too.
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let driver = command
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", tools.chromedriver.display()))?;
        let user_data = profile.path().join("profile");
        let mut browser = Browser {
            driver: Some(driver),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            session: None,
            log,
            profile,
        };
        browser.wait_driver()?;
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", user_data.display()));
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": tools.chromium,
                        "args": args,
                    },
                    "timeouts": {"implicit": 0, "pageLoad": 30_000, "script": 30_000},
                }
            }
        });
        let value = browser
            .call("POST", "/session", Some(&capabilities))
            .map_err(|e| format!("new session: {e}\n{}", browser.log_tail(30)))?;
        let id = value["sessionId"]
            .as_str()
            .ok_or_else(|| format!("new session: no sessionId in {value}"))?;
        browser.session = Some(id.to_owned());
        Ok(browser)
    }

    fn wait_driver(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(v) = self.call("GET", "/status", None) {
                if v["ready"] == json!(true) {
                    return Ok(());
                }
            }
            if let Some(child) = self.driver.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.driver = None;
                    return Err(format!(
                        "chromedriver exited ({status}):\n{}",
                        self.log_tail(30)
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "chromedriver not ready after {START_TIMEOUT:?}:\n{}",
                    self.log_tail(30)
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `lines` lines of chromedriver's log (browser console messages included).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn session_path(&self, tail: &str) -> String {
        format!("/session/{}{tail}", self.session.as_deref().unwrap_or("-"))
    }

    fn command(&self, method: &str, tail: &str, body: Option<&Value>) -> Result<Value, Error> {
        self.call(method, &self.session_path(tail), body)
    }

    /// One WebDriver request; returns the answer's `value`.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, Error> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
        stream.set_write_timeout(Some(COMMAND_TIMEOUT))?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n",
            self.addr
        );
        if method == "POST" {
            request.push_str(&format!(
                "Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        stream.write_all(request.as_bytes())?;
        let (status, body) = read_response(&mut stream)?;
        let json: Value = serde_json::from_slice(&body).map_err(|e| {
            Error::Protocol(format!(
                "{e}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        })?;
        let value = json.get("value").cloned().unwrap_or(Value::Null);
        if status >= 400 || value.get("error").is_some_and(Value::is_string) {
            return Err(Error::WebDriver {
                status,
                error: value["error"]
                    .as_str()
                    .unwrap_or("unknown error")
                    .to_owned(),
                message: value["message"].as_str().unwrap_or("").to_owned(),
            });
        }
        Ok(value)
    }

    /// Navigates to `url` and waits for the page to load.
    pub fn goto(&self, url: &str) -> Result<(), Error> {
        self.command("POST", "/url", Some(&json!({ "url": url })))
            .map(drop)
    }

    /// The first element matching a CSS selector.
    pub fn find(&self, css: &str) -> Result<Element, Error> {
        let v = self.command(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": css})),
        )?;
        element(&v)
    }

    /// Every element matching a CSS selector, in document order.
    pub fn find_all(&self, css: &str) -> Result<Vec<Element>, Error> {
        let v = self.command(
            "POST",
            "/elements",
            Some(&json!({"using": "css selector", "value": css})),
        )?;
        v.as_array()
            .ok_or_else(|| Error::Protocol(format!("elements: {v}")))?
            .iter()
            .map(element)
            .collect()
    }

    /// Clicks an element (scrolled into view first by the driver).
    pub fn click(&self, e: &Element) -> Result<(), Error> {
        self.command("POST", &format!("/element/{}/click", e.0), Some(&json!({})))
            .map(drop)
    }

    /// Clears a text input.
    pub fn clear(&self, e: &Element) -> Result<(), Error> {
        self.command("POST", &format!("/element/{}/clear", e.0), Some(&json!({})))
            .map(drop)
    }

    /// Types `text` into an element, as key presses.
    pub fn send_keys(&self, e: &Element, text: &str) -> Result<(), Error> {
        self.command(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(&json!({ "text": text })),
        )
        .map(drop)
    }

    /// Clears an input and types `text` into it.
    pub fn fill(&self, css: &str, text: &str) -> Result<(), Error> {
        let e = self.find(css)?;
        self.clear(&e)?;
        self.send_keys(&e, text)
    }

    /// The rendered text of an element.
    pub fn text(&self, e: &Element) -> Result<String, Error> {
        let v = self.command("GET", &format!("/element/{}/text", e.0), None)?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// An attribute of an element (`None` when absent).
    pub fn attribute(&self, e: &Element, name: &str) -> Result<Option<String>, Error> {
        let v = self.command("GET", &format!("/element/{}/attribute/{name}", e.0), None)?;
        Ok(v.as_str().map(str::to_owned))
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its result.
    pub fn execute(&self, script: &str, args: &[Value]) -> Result<Value, Error> {
        self.command(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )
    }

    /// A PNG screenshot of the viewport.
    pub fn screenshot(&self) -> Result<Vec<u8>, Error> {
        let v = self.command("GET", "/screenshot", None)?;
        let b64 = v
            .as_str()
            .ok_or_else(|| Error::Protocol("screenshot is not a string".into()))?;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| Error::Protocol(format!("screenshot base64: {e}")))
    }

    /// Polls `f` every 50 ms until it returns `Some`, for at most `timeout`; panics with
    /// `what`, the last error and chromedriver's log tail otherwise.
    pub fn wait_until<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut(&Browser) -> Result<Option<T>, Error>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            match f(self) {
                Ok(Some(v)) => return v,
                Ok(None) => {}
                Err(e) => last = e.to_string(),
            }
            if Instant::now() > deadline {
                let page = self
                    .execute("return document.body.innerText.slice(0, 4000);", &[])
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .unwrap_or_else(|e| format!("(unreadable: {e})"));
                panic!(
                    "timed out after {timeout:?} waiting for {what} (last error: {last})\n\
                     page text:\n{page}\nchromedriver log:\n{}",
                    self.log_tail(40)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if self.session.is_some() {
            // Ends the browser cleanly; the process group kill below is the backstop.
            let _ = self.command("DELETE", "", None);
            self.session = None;
        }
        if let Some(mut child) = self.driver.take() {
            if let Ok(pgid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) has no memory-safety preconditions. The group id is our
                // unreaped child's pid (process_group(0)), so it cannot have been recycled.
                unsafe {
                    libc::kill(-pgid, libc::SIGTERM);
                }
                let deadline = Instant::now() + Duration::from_secs(2);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                // SAFETY: as above; SIGKILL whatever of the group is left (browser helpers
                // may outlive chromedriver).
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.stop();
    }
}

fn element(v: &Value) -> Result<Element, Error> {
    v.get(ELEMENT_KEY)
        .and_then(Value::as_str)
        .map(|id| Element(id.to_owned()))
        .ok_or_else(|| Error::Protocol(format!("not an element: {v}")))
}

/// Reads one HTTP response (the server closes after it): status and body, de-chunked.
fn read_response(stream: &mut TcpStream) -> Result<(u16, Vec<u8>), Error> {
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RESPONSE {
            return Err(Error::Protocol(format!(
                "response over {MAX_RESPONSE} bytes"
            )));
        }
        if let Some((status, head_len, framing)) = parse_head(&buf)? {
            match framing {
                Framing::Length(len) if buf.len() >= head_len + len => {
                    return Ok((status, buf[head_len..head_len + len].to_vec()));
                }
                Framing::Chunked => {
                    if let Some(body) = dechunk(&buf[head_len..])? {
                        return Ok((status, body));
                    }
                }
                _ => {}
            }
        }
    }
    match parse_head(&buf)? {
        Some((status, head_len, Framing::Close)) => Ok((status, buf[head_len..].to_vec())),
        _ => Err(Error::Protocol("connection closed mid-response".into())),
    }
}

enum Framing {
    Length(usize),
    Chunked,
    Close,
}

fn parse_head(buf: &[u8]) -> Result<Option<(u16, usize, Framing)>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Error::Protocol(format!("HTTP: {e}"))),
    };
    let status = response.code.unwrap_or(0);
    let mut framing = Framing::Close;
    for h in response.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        if h.name.eq_ignore_ascii_case("content-length") {
            let len = value
                .trim()
                .parse::<usize>()
                .map_err(|_| Error::Protocol(format!("Content-Length {value:?}")))?;
            framing = Framing::Length(len);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
        }
    }
    Ok(Some((status, head_len, framing)))
}

/// The body of a complete chunked encoding, or `None` if more bytes are needed.
fn dechunk(mut data: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| Error::Protocol(format!("chunk size {size_text:?}")))?;
        let start = line_end + 2;
        if size == 0 {
            return Ok(Some(body));
        }
        if data.len() < start + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}

//! Headless Chromium for the browser tests, through `headless_chrome` (the DevTools protocol
//! over a WebSocket: no chromedriver, no browser download). The browser is the system's
//! Chromium; dropping the [`Browser`] kills it, even after a panic.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use headless_chrome::protocol::cdp::Emulation;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{LaunchOptions, Tab};
use serde_json::Value;

/// Flags for a quiet, self-contained headless Chromium: no GPU, and none of the background
/// traffic a closed network refuses. (`headless_chrome` adds headless and no-sandbox, which
/// tests running as root in containers need.)
const CHROMIUM_FLAGS: [&str; 6] = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
];

/// The window's width and height (CSS pixels).
const WINDOW: (u32, u32) = (1280, 900);

/// The Chromium binary: `$CHROMIUM` if set, else Debian's path, else the first match on
/// `PATH`.
pub fn find_chromium() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p))
            .filter(|p| p.is_file())
            .ok_or_else(|| "$CHROMIUM names no file".to_owned());
    }
    for name in ["chromium", "chromium-browser"] {
        let debian = Path::new("/usr/bin").join(name);
        if debian.is_file() {
            return Ok(debian);
        }
        let on_path = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        });
        if let Some(found) = on_path {
            return Ok(found);
        }
    }
    Err(
        "headless browser tests need Chromium; install it with `apt-get install -y chromium` \
         (scripts/test does it)"
            .to_owned(),
    )
}

/// One headless Chromium with one tab.
pub struct Browser {
    tab: Arc<Tab>,
    // Owns the browser process; dropping it kills the browser.
    _browser: headless_chrome::Browser,
}

impl Browser {
    /// Starts Chromium from `chromium`.
    pub fn start(chromium: &Path) -> anyhow::Result<Browser> {
        let options = LaunchOptions::default_builder()
            .path(Some(chromium.to_owned()))
            .headless(true)
            .sandbox(false)
            .window_size(Some(WINDOW))
            .args(CHROMIUM_FLAGS.iter().map(OsStr::new).collect())
            // The default (30 s without a DevTools message) can end a slow test's browser.
            .idle_browser_timeout(Duration::from_secs(600))
            .build()?;
        let browser = headless_chrome::Browser::new(options)?;
        let tab = browser.new_tab()?;
        Ok(Browser {
            tab,
            _browser: browser,
        })
    }

    /// Loads `url` and waits for the navigation to finish.
    pub fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.tab.navigate_to(url)?.wait_until_navigated()?;
        Ok(())
    }

    /// The value of the JavaScript function body `script` (which `return`s it), as JSON.
    pub fn execute(&self, script: &str) -> anyhow::Result<Value> {
        // JSON.stringify brings arrays and objects back whole, not as remote references.
        let wrapped = format!("JSON.stringify((() => {{ {script} }})())");
        let result = self.tab.evaluate(&wrapped, false)?;
        match result.value {
            Some(Value::String(json)) => Ok(serde_json::from_str(&json)?),
            _ => Ok(Value::Null),
        }
    }

    /// Whether an element matches `css`.
    pub fn exists(&self, css: &str) -> anyhow::Result<bool> {
        Ok(self.count(css)? > 0)
    }

    /// How many elements match `css`.
    pub fn count(&self, css: &str) -> anyhow::Result<usize> {
        let css = serde_json::to_string(css)?;
        let n = self.execute(&format!("return document.querySelectorAll({css}).length;"))?;
        Ok(n.as_u64().unwrap_or(0) as usize)
    }

    /// Clicks the element matching `css`.
    pub fn click(&self, css: &str) -> anyhow::Result<()> {
        self.tab.find_element(css)?.click()?;
        Ok(())
    }

    /// Clears the input matching `css` and types `text` into it (as key presses).
    pub fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let input = self.tab.find_element(css)?;
        input.call_js_fn("function() { this.value = ''; }", vec![], false)?;
        input.click()?;
        self.tab.type_str(text)?;
        Ok(())
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
        self.tab
            .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
    }

    /// A PNG of the whole page: the viewport is emulated as tall as the page for the shot
    /// (a headless window does not resize its viewport), then the emulation is cleared.
    pub fn screenshot_full_page(&self) -> anyhow::Result<Vec<u8>> {
        let height = self
            .execute("return document.documentElement.scrollHeight;")?
            .as_u64()
            .map_or(WINDOW.1, |h| u32::try_from(h).unwrap_or(u32::MAX))
            .max(WINDOW.1);
        self.tab.call_method(Emulation::SetDeviceMetricsOverride {
            width: WINDOW.0,
            height,
            device_scale_factor: 1.0,
            mobile: false,
            scale: None,
            screen_width: None,
            screen_height: None,
            position_x: None,
            position_y: None,
            dont_set_visible_size: None,
            screen_orientation: None,
            viewport: None,
            display_feature: None,
            device_posture: None,
        })?;
        let grown = format!("return window.innerHeight >= {height};");
        self.wait_until(Duration::from_secs(10), "the viewport to grow", |b| {
            Ok((b.execute(&grown)? == Value::Bool(true)).then_some(()))
        });
        let png = self.screenshot();
        self.tab
            .call_method(Emulation::ClearDeviceMetricsOverride(None))?;
        png
    }

    /// Polls `f` every 50 ms until it returns `Some`, for at most `timeout`; panics with
    /// `what`, the last error and the page's text otherwise.
    pub fn wait_until<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut(&Browser) -> anyhow::Result<Option<T>>,
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
                    .execute("return document.body.innerText.slice(0, 4000);")
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .unwrap_or_else(|e| format!("(unreadable: {e})"));
                panic!(
                    "timed out after {timeout:?} waiting for {what} (last error: {last})\n\
                     page text:\n{page}"
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

//! The page templates: handlebars in strict mode, embedded in the binary from `web/templates`.

use handlebars::Handlebars;
use serde::Serialize;

/// Every template, by name, as embedded at build time.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("layout", include_str!("../../../web/templates/layout.hbs")),
    (
        "request_table",
        include_str!("../../../web/templates/request_table.hbs"),
    ),
    ("signin", include_str!("../../../web/templates/signin.hbs")),
    ("home", include_str!("../../../web/templates/home.hbs")),
    (
        "new_request",
        include_str!("../../../web/templates/new_request.hbs"),
    ),
    (
        "request",
        include_str!("../../../web/templates/request.hbs"),
    ),
    (
        "approvals",
        include_str!("../../../web/templates/approvals.hbs"),
    ),
    (
        "entitlements",
        include_str!("../../../web/templates/entitlements.hbs"),
    ),
    ("audit", include_str!("../../../web/templates/audit.hbs")),
    ("tokens", include_str!("../../../web/templates/tokens.hbs")),
    (
        "cli_login",
        include_str!("../../../web/templates/cli_login.hbs"),
    ),
    ("error", include_str!("../../../web/templates/error.hbs")),
    ("link", include_str!("../../../web/templates/link.hbs")),
    (
        "link_done",
        include_str!("../../../web/templates/link_done.hbs"),
    ),
    ("outbox", include_str!("../../../web/templates/outbox.hbs")),
];

/// Static files, as `(path under /static/, content type, body)`.
pub const STATIC: &[(&str, &str, &str)] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../../web/static/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/static/app.js"),
    ),
];

/// The registry: strict mode (a missing field is an error, never an empty string), HTML
/// escaping of every `{{value}}` (the default), no triple-stash anywhere.
#[derive(Debug)]
pub struct Templates {
    hb: Handlebars<'static>,
}

impl Templates {
    /// Compile every template; a broken template is a build-time bug, reported at start-up.
    pub fn new() -> Result<Templates, String> {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.set_prevent_indent(true);
        for (name, text) in TEMPLATES {
            if text.contains("{{{") {
                return Err(format!(
                    "template `{name}` uses an unescaped {{{{{{ }}}}}} block"
                ));
            }
            hb.register_template_string(name, *text)
                .map_err(|e| format!("template `{name}`: {e}"))?;
        }
        Ok(Templates { hb })
    }

    /// Render one page.
    pub fn render<T: Serialize>(&self, name: &str, data: &T) -> Result<String, String> {
        self.hb
            .render(name, data)
            .map_err(|e| format!("rendering `{name}`: {e}"))
    }
}

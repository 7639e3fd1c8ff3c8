//! The page's files as embedded: small (the budget), no inline script or style (the CSP
//! forbids them, so they would not run; the gateway inlines app.css itself, allowed by its hash),
//! and no way for text to become HTML in app.js.
#![allow(clippy::unwrap_used)]

use jaring_web::assets::{APP_CSS, APP_JS, INDEX_HTML, LAB_HTML, LAB_JS};

/// The budget for the whole page.
const MAX_PAGE_BYTES: usize = 40 * 1024;

#[test]
fn the_page_fits_its_budget() {
    let total = INDEX_HTML.len() + APP_JS.len() + APP_CSS.len();
    eprintln!("page: {total} bytes (index.html + app.js + app.css)");
    assert!(total <= MAX_PAGE_BYTES, "the page is {total} bytes");
}

#[test]
fn the_html_has_no_inline_script_or_style_and_loads_its_own_files() {
    no_inline_code(INDEX_HTML, "/app.js", "/app.css");
    no_inline_code(LAB_HTML, "/lab.js", "/lab.css");
}

/// The chat page and the lab's dashboard alike: scripts and styles only from their own files.
fn no_inline_code(html: &str, js: &str, css: &str) {
    let html = html.to_ascii_lowercase();
    assert!(!html.contains("<style"), "an inline <style>");
    assert!(!html.contains(" style="), "a style attribute");
    // An event handler attribute: ` on` then letters then `=`.
    for (i, _) in html.match_indices(" on") {
        let name: String = html[i + 3..]
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect();
        let after = html[i + 3 + name.len()..].chars().next();
        assert!(
            name.is_empty() || after != Some('='),
            "an inline handler: on{name}="
        );
    }
    for tag in html.split("<script").skip(1) {
        let head = &tag[..tag.find('>').unwrap()];
        assert!(head.contains("src="), "an inline <script>");
    }
    assert!(html.contains(&format!("src=\"{js}\"")));
    assert!(html.contains(&format!("href=\"{css}\"")));
}

#[test]
fn app_js_never_parses_text_as_html() {
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        ".style.",
        "setAttribute('style'",
    ] {
        assert!(!APP_JS.contains(sink), "app.js uses {sink}");
        assert!(!LAB_JS.contains(sink), "lab.js uses {sink}");
    }
}

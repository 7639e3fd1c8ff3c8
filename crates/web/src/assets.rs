//! The page's files, embedded in the binary (no build step, nothing fetched at run time).

/// `GET /`.
pub const INDEX_HTML: &str = include_str!("../assets/index.html");
/// `GET /app.js`.
pub const APP_JS: &str = include_str!("../assets/app.js");
/// `GET /app.css`.
pub const APP_CSS: &str = include_str!("../assets/app.css");
/// `GET /lab`: the lab's dashboard.
pub const LAB_HTML: &str = include_str!("../assets/lab.html");
/// `GET /lab.js`.
pub const LAB_JS: &str = include_str!("../assets/lab.js");
/// `GET /lab.css`.
pub const LAB_CSS: &str = include_str!("../assets/lab.css");

//! Every colour of the HTML outputs, defined once: the page's CSS variables (prepended to
//! `report-templates/report.css`), the timeline's loop states, stall mark, CPU line and
//! probe dots, and their legend.

/// Bad: a blocked verdict, a worse figure.
pub const BAD: &str = "#c0392b";
/// Good: a healthy verdict, a better figure, an answered probe.
pub const OK: &str = "#1e8449";
/// Text, and the timeline's process-CPU line.
pub const INK: &str = "#1b1f24";
/// Secondary text.
pub const MUTED: &str = "#5b6573";
/// Rules and borders.
pub const LINE: &str = "#e3e7ee";
/// Panel background.
pub const BG: &str = "#f7f8fa";
/// A stall on the timeline, and a probe that got no answer.
pub const STALL: &str = "#d62d20";

/// The timeline's time axis.
pub const AXIS: &str = "#8a94a3";
/// The timeline's axis labels.
pub const AXIS_TEXT: &str = "#4a5361";

/// The loop states on the timeline, in stacking order: (legend label, colour).
pub const LOOP_STATES: [(&str, &str); 5] = [
    ("idle", "#d9dee7"),
    ("on-CPU", "#e8704a"),
    ("native", "#d9a441"),
    ("waiting", "#5b7fd6"),
    ("GIL wait", "#9b59b6"),
];

/// The CSS `:root` rule declaring the page's colour variables.
pub fn css_root() -> String {
    format!(
        ":root {{ --bad: {BAD}; --ok: {OK}; --ink: {INK}; --muted: {MUTED}; --line: {LINE}; --bg: {BG}; }}"
    )
}

/// The page's `<style>` element: the colour variables and `report.css`.
pub fn style_element() -> String {
    let css = include_str!("../../report-templates/report.css");
    // The asset's leading comment is for its readers, not for every report.
    let css = css.split_once("*/\n").map_or(css, |(_, rest)| rest);
    format!("<style>\n{}\n{css}</style>\n", css_root())
}

//! Writing the SVG document: elements, escaping, shortening of long names.

use std::fmt::Write as _;

use super::WIDTH;

/// Rough width of `text` in a sans-serif font of `size` px.
pub(super) fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.58
}

/// `text` cut to at most `max_chars` characters, ending in "…" if cut.
pub(super) fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// `text` escaped for XML character data and attribute values; characters
/// XML 1.0 does not allow become U+FFFD.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A fill colour (`#rrggbb`) and its opacity, 0 to 1.
#[derive(Clone, Copy)]
pub(super) struct Fill<'a> {
    pub(super) color: &'a str,
    pub(super) opacity: f64,
}

impl<'a> Fill<'a> {
    pub(super) fn solid(color: &'a str) -> Self {
        Fill {
            color,
            opacity: 1.0,
        }
    }
}

/// The elements of an SVG document; [`Svg::finish`] wraps them in `<svg>`.
#[derive(Default)]
pub(super) struct Svg {
    body: String,
}

impl Svg {
    /// Text whose baseline starts at (`x`, `y`); `attributes` are trusted
    /// (constants of this module), `content` is escaped.
    pub(super) fn text(&mut self, x: f64, y: f64, attributes: &str, content: &str) {
        let _ = writeln!(
            self.body,
            r#"<text x="{x:.1}" y="{y:.1}" {attributes}>{}</text>"#,
            escape(content)
        );
    }

    pub(super) fn rect(
        &mut self,
        x: f64,
        y: f64,
        width: f64,
        height: f64,
        fill: Fill<'_>,
        tooltip: Option<&str>,
    ) {
        let width = width.max(0.0);
        let _ = write!(
            self.body,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{width:.1}" height="{height:.1}" fill="{}""#,
            fill.color
        );
        if fill.opacity < 1.0 {
            let _ = write!(self.body, r#" fill-opacity="{:.2}""#, fill.opacity);
        }
        match tooltip {
            Some(tooltip) => {
                let _ = writeln!(self.body, "><title>{}</title></rect>", escape(tooltip));
            }
            None => self.body.push_str("/>\n"),
        }
    }

    pub(super) fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, stroke: &str, width: f64) {
        let _ = writeln!(
            self.body,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{stroke}" stroke-width="{width}"/>"#
        );
    }

    /// The document, `height` px tall, on a white background.
    pub(super) fn finish(self, height: f64) -> String {
        let height = height.ceil();
        format!(
            concat!(
                r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" "#,
                r##"viewBox="0 0 {w} {h}" font-family="sans-serif" fill="#111827">"##,
                "\n",
                r##"<rect x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>"##,
                "\n{body}</svg>\n"
            ),
            w = WIDTH,
            h = height,
            body = self.body
        )
    }
}

//! A small namespace-resolved element tree over quick-xml's `NsReader`, enough to read
//! SOAP envelopes and WS-Discovery messages by (namespace, local name) instead of by
//! prefix (devices choose their own prefixes: `tt:`, `ns2:`, none...). Bounded: at most
//! [`MAX_DEPTH`] levels and [`MAX_NODES`] elements, so a hostile reply costs little.

use std::fmt;

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

/// Nesting deeper than this is refused (ONVIF replies nest about 8 levels).
pub const MAX_DEPTH: usize = 64;
/// More elements than this are refused (a GetProfiles reply of 16 profiles has ~1500).
pub const MAX_NODES: usize = 50_000;

/// One element: its namespace URI (if bound), local name, attributes by local name,
/// children and the concatenated text directly inside it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub ns: Option<String>,
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError(pub String);

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed XML: {}", self.0)
    }
}

impl std::error::Error for XmlError {}

impl Element {
    /// Whether this element is `{ns}name`.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.name == name && self.ns.as_deref() == Some(ns)
    }

    /// The first child `{ns}name`.
    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    /// Every child `{ns}name`.
    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    /// The first child with this local name, in any namespace (for the few places
    /// devices disagree on the namespace, e.g. `XAddr` in old firmware).
    pub fn child_local(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Follows a path of `{ns}name` steps.
    pub fn path(&self, steps: &[(&str, &str)]) -> Option<&Element> {
        let mut e = self;
        for (ns, name) in steps {
            e = e.child(ns, name)?;
        }
        Some(e)
    }

    /// The first descendant (depth first, self excluded) `{ns}name`.
    pub fn find(&self, ns: &str, name: &str) -> Option<&Element> {
        for c in &self.children {
            if c.is(ns, name) {
                return Some(c);
            }
            if let Some(f) = c.find(ns, name) {
                return Some(f);
            }
        }
        None
    }

    /// An attribute by local name.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The trimmed text.
    pub fn text(&self) -> &str {
        self.text.trim()
    }

    /// The trimmed text of child `{ns}name`, if present.
    pub fn child_text(&self, ns: &str, name: &str) -> Option<&str> {
        self.child(ns, name).map(Element::text)
    }
}

/// Parses a document into its root element.
pub fn parse(doc: &str) -> Result<Element, XmlError> {
    let mut reader = NsReader::from_str(doc);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut nodes = 0usize;
    let err = |e: &dyn fmt::Display| XmlError(e.to_string());
    loop {
        let (resolved, event) = reader.read_resolved_event().map_err(|e| err(&e))?;
        let ns = match resolved {
            ResolveResult::Bound(n) => Some(String::from_utf8_lossy(n.as_ref()).into_owned()),
            _ => None,
        };
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                nodes += 1;
                if nodes > MAX_NODES || stack.len() >= MAX_DEPTH {
                    return Err(XmlError("document too large or too deep".into()));
                }
                let mut el = Element {
                    ns,
                    name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    ..Element::default()
                };
                for a in e.attributes() {
                    let a = a.map_err(|e| err(&e))?;
                    let key = String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned();
                    let value = a
                        .normalized_value(quick_xml::XmlVersion::default())
                        .map_err(|e| err(&e))?
                        .into_owned();
                    el.attrs.push((key, value));
                }
                if matches!(event, Event::Empty(_)) {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None => return Ok(el),
                    }
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| XmlError("unbalanced end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(el),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.decode().map_err(|e| err(&e))?);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.decode().map_err(|e| err(&e))?);
                }
            }
            Event::GeneralRef(r) => {
                let Some(top) = stack.last_mut() else {
                    continue;
                };
                if let Some(c) = r.resolve_char_ref().map_err(|e| err(&e))? {
                    top.text.push(c);
                } else {
                    let name = r.decode().map_err(|e| err(&e))?;
                    top.text.push(match name.as_ref() {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "apos" => '\'',
                        "quot" => '"',
                        other => return Err(XmlError(format!("unknown entity &{other};"))),
                    });
                }
            }
            Event::Eof => return Err(XmlError("unexpected end of document".into())),
            _ => {}
        }
    }
}

/// Escapes text for an element or a double-quoted attribute.
pub fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_namespaces_whatever_the_prefix() {
        let doc = r#"<?xml version="1.0"?>
<a:Envelope xmlns:a="urn:x" xmlns:b="urn:y"><a:Body><b:Item id="1" b:k="v">x &amp; y&#33; <![CDATA[<z>]]></b:Item><Item xmlns="urn:y"/></a:Body></a:Envelope>"#;
        let root = parse(doc).unwrap();
        assert!(root.is("urn:x", "Envelope"));
        let body = root.child("urn:x", "Body").unwrap();
        let items: Vec<_> = body.children_named("urn:y", "Item").collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].text(), "x & y! <z>");
        assert_eq!(items[0].attr("id"), Some("1"));
        assert_eq!(items[0].attr("k"), Some("v"));
        assert!(root.find("urn:y", "Item").is_some());
        assert!(root.find("urn:x", "Item").is_none());
    }

    #[test]
    fn refuses_broken_and_deep_documents() {
        assert!(parse("<a><b></a>").is_err());
        assert!(parse("<a>").is_err());
        assert!(parse("").is_err());
        assert!(parse("<a>&bogus;</a>").is_err());
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn escapes() {
        assert_eq!(escape(r#"<a&"b'>"#), "&lt;a&amp;&quot;b&apos;&gt;");
    }
}

//! `--graphviz FILE`: the resolved graph in DOT, written atomically on every swap.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use resource::ResGraph;

pub fn render(name: &str, g: &ResGraph) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = format!("digraph {} {{\n", q(name));
    let mut ids: Vec<String> = g.vertices.iter().map(|v| v.id().to_string()).collect();
    ids.sort();
    for id in &ids {
        out.push_str(&format!("\t{};\n", q(id)));
    }
    let mut edges: Vec<(String, String, bool)> = g
        .edges
        .iter()
        .map(|e| (e.from.to_string(), e.to.to_string(), e.notify))
        .collect();
    edges.sort();
    for (from, to, notify) in edges {
        let style = if notify {
            " [style=bold, label=\"notify\"]"
        } else {
            ""
        };
        out.push_str(&format!("\t{} -> {}{};\n", q(&from), q(&to), style));
    }
    out.push_str("}\n");
    out
}

pub fn write(path: &Path, name: &str, g: &ResGraph) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write graphviz file {}", path.display()))?;
    tmp.write_all(render(name, g).as_bytes())?;
    tmp.persist(path)
        .with_context(|| format!("cannot write graphviz file {}", path.display()))?;
    Ok(())
}

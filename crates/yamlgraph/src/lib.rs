//! yamlgraph

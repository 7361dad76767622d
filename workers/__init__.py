"""Built-in transforms. Each module holds one Transform; the engine finds them through
`dataflow.registry.STAGES`, never by importing them directly."""

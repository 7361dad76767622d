"""Chains referenced by tests/test_chain.py's YAML jobs (`- compose: chains:errors_only`)."""
import dataflow

errors_only = dataflow.compose(dataflow.Grep(r'" [45][0-9][0-9] '),
                               dataflow.Replace(r"^(\S+) .*$", r"\1"), name="errors-only")
as_list = [dataflow.Grep(" 404 ")]
not_a_chain = {"grep": " 404 "}

"""A deterministic generator of a county medical community (县域医共体) as FHIR R4 resources.

`Dataset(patients, seed)` describes the community and its residents; `write_ndjson` and
`write_bundles` (in :mod:`santong.generate.output`) write them out, `santong generate` is the CLI.
"""

from santong.generate.dataset import AS_OF, Dataset

__all__ = ["AS_OF", "Dataset"]

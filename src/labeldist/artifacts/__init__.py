"""The files passed between stages (docs/formats.md), one writer and one reader per file kind.

- `labels`: `data/{dataset}/labels.json` (`write_label_set`, `read_label_set` -> `LabelSet`);
- `hidden`: the baseline generation's `.hidden.safetensors` (`write_hidden`, `read_hidden_states`);
- `estimates`: `estimates/{dataset}/{model}/{regime}/{estimator}.parquet`, the probes' per-layer and
  own-label CSVs (`write_estimates`/`read_estimates`, `write_layer_estimates`/`read_layer_estimates`,
  `write_own_labels`);
- `metrics`: `metrics/{dataset}/{model}/{regime}.json` (`write_metrics`, `read_metric_files`).

The data splits, subsets.json and the generation records keep their readers and writers in
`labeldist.data`, `labeldist.generation` and the stages that parse them (docs/formats.md names each).
"""

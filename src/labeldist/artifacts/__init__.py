"""The files passed between stages (docs/formats.md), one writer and one reader per file kind.

- `splits`: `data/{dataset}/{split}.jsonl` (`write_split`, `read_split` -> `SplitRecord`) and
  `subsets.json` (`write_subsets`, `read_subsets`; `select_records`, `demo_pool`);
- `labels`: `data/{dataset}/labels.json` (`write_label_set`, `read_label_set` -> `LabelSet`);
- `generations`: `generations/.../seed{seed}.jsonl` (`write_generation_records`; `read_generations` ->
  `Generation`, `read_unary`, `read_pairwise`);
- `hidden`: the baseline generation's `.hidden.safetensors` (`write_hidden`, `read_hidden_states`);
- `estimates`: `estimates/{dataset}/{model}/{regime}/{estimator}.parquet`, the probes' per-layer and
  own-label CSVs (`write_estimates`/`read_estimates`, `write_layer_estimates`/`read_layer_estimates`,
  `write_own_labels`);
- `metrics`: `metrics/{dataset}/{model}/{regime}.json` (`write_metrics`, `read_metric_files`);
- `tables`: the CSV tables the figures read and a finetuned model's `training_log.csv`
  (`write_table_csv`/`read_table_csv`, `write_training_log`/`read_training_log`);
- `paths`: the results layout, one template per path (`build` for the workflow, `parse` for the readers).

Model folders are `save_pretrained` folders: Hugging Face writes and reads them.
"""

# Data stage (docs/formats.md, "Data"): one rule per dataset writes
# results/data/{dataset}/{train,dev,test}.jsonl, labels.json and subsets.json.
# Its outputs are part of final_targets() (common.smk), so no STAGE_TARGETS entry is needed.


rule prepare_data:
    input:
        # the local files the loader reads (none for the synthetic loader or a hub id)
        get_dataset_inputs,
    output:
        **data_files("{dataset}"),
    log:
        f"{R}/logs/data/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/data/{{dataset}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        name=lambda wildcards: wildcards.dataset,
        dataset=lambda wildcards: config["datasets"][wildcards.dataset],
    script:
        "../scripts/prepare_data.py"

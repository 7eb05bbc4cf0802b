# Classification, for samples with a labels column (a table: sequence, label, id): fine-tune a classifier
# from the sample's pretrained backbone, predict the table with it, evaluate the predictions.


rule finetune:
    input:
        model=f"{OUT}/{{sample}}/pretrain",
        labels=sample_file("labels"),
    output:
        directory(f"{OUT}/{{sample}}/finetune"),
    params:
        backbone=lambda w, input: os.path.join(input.model, "checkpoint"),
        args=lambda w: cli_args("finetune"),
        device=config["device"],
    log:
        log_path("finetune"),
    threads: res("finetune", "threads", 4)
    resources:
        mem_mb=res("finetune", "mem_mb", 16000),
        gpu=res("finetune", "gpu", 1),
        runtime=res("finetune", "runtime", 240),
    conda:
        "../envs/seqssm.yaml"
    shell:
        "OMP_NUM_THREADS={threads:q} seqssm finetune {input.labels:q} --init-from {params.backbone:q} --out {output:q} {params.args:q} --device {params.device:q} > {log:q} 2>&1"


rule predict:
    input:
        model=f"{OUT}/{{sample}}/finetune",
        labels=sample_file("labels"),
    output:
        f"{OUT}/{{sample}}/predict/predictions.tsv",
    params:
        checkpoint=lambda w, input: os.path.join(input.model, "checkpoint"),
        args=lambda w: cli_args("predict"),
        device=config["device"],
    log:
        log_path("predict"),
    threads: res("predict", "threads", 2)
    resources:
        mem_mb=res("predict", "mem_mb", 8000),
        gpu=res("predict", "gpu", 1),
        runtime=res("predict", "runtime", 60),
    conda:
        "../envs/seqssm.yaml"
    shell:
        "OMP_NUM_THREADS={threads:q} seqssm predict {params.checkpoint:q} {input.labels:q} --out {output:q} {params.args:q} --device {params.device:q} > {log:q} 2>&1"


rule evaluate:
    input:
        predictions=f"{OUT}/{{sample}}/predict/predictions.tsv",
        model=f"{OUT}/{{sample}}/finetune",
    output:
        directory(f"{OUT}/{{sample}}/evaluate"),
    params:
        history=lambda w, input: os.path.join(input.model, "train_log.tsv"),
        args=lambda w: cli_args("evaluate"),
    log:
        log_path("evaluate"),
    threads: res("evaluate", "threads", 1)
    resources:
        mem_mb=res("evaluate", "mem_mb", 4000),
        gpu=res("evaluate", "gpu", 0),
        runtime=res("evaluate", "runtime", 15),
    conda:
        "../envs/seqssm.yaml"
    shell:
        "OMP_NUM_THREADS={threads:q} seqssm evaluate {input.predictions:q} --out {output:q} --history {params.history:q} {params.args:q} > {log:q} 2>&1"

# Embeddings of each sample's genome (windows, mean-pooled) under its pretrained model.


rule embed:
    input:
        model=f"{OUT}/{{sample}}/pretrain",
        genome=sample_file("genome"),
    output:
        directory(f"{OUT}/{{sample}}/embed"),
    params:
        checkpoint=lambda w, input: os.path.join(input.model, "checkpoint"),
        args=lambda w: cli_args("embed"),
        device=config["device"],
    log:
        log_path("embed"),
    threads: res("embed", "threads", 2)
    resources:
        mem_mb=res("embed", "mem_mb", 16000),
        gpu=res("embed", "gpu", 1),
        runtime=res("embed", "runtime", 120),
    conda:
        "../envs/seqssm.yaml"
    shell:
        "OMP_NUM_THREADS={threads:q} seqssm embed {params.checkpoint:q} {input.genome:q} --out {output:q} {params.args:q} --device {params.device:q} > {log:q} 2>&1"


rule generate:
    input:
        model=f"{OUT}/{{sample}}/pretrain",
    output:
        f"{OUT}/{{sample}}/generated.fa",
    params:
        checkpoint=lambda w, input: os.path.join(input.model, "checkpoint"),
        args=lambda w: cli_args("generate"),
        device=config["device"],
    log:
        log_path("generate"),
    threads: res("generate", "threads", 1)
    resources:
        mem_mb=res("generate", "mem_mb", 4000),
        gpu=res("generate", "gpu", 1),
        runtime=res("generate", "runtime", 30),
    conda:
        "../envs/seqssm.yaml"
    shell:
        "OMP_NUM_THREADS={threads:q} seqssm generate {params.checkpoint:q} --out {output:q} {params.args:q} --device {params.device:q} > {log:q} 2>&1"

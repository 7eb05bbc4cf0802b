# Language model pretraining: one job per sample, on its genome.


rule pretrain:
    input:
        genome=sample_file("genome"),
    output:
        directory(f"{OUT}/{{sample}}/pretrain"),
    params:
        args=lambda w: cli_args("pretrain"),
        device=config["device"],
    log:
        log_path("pretrain"),
    threads: res("pretrain", "threads", 4)
    resources:
        mem_mb=res("pretrain", "mem_mb", 16000),
        gpu=res("pretrain", "gpu", 1),
        runtime=res("pretrain", "runtime", 720),
    conda:
        "../envs/seqssm.yaml"
    shell:
        "OMP_NUM_THREADS={threads:q} seqssm pretrain {input.genome:q} --out {output:q} {params.args:q} --device {params.device:q} > {log:q} 2>&1"

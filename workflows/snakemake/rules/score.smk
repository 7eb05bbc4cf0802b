# Likelihood scoring: each sample's genome (bits per record, and per base as bedGraph), and its variants
# (log-likelihood ratio ALT vs REF per allele) for samples with a vcf column.

_PER_POSITION = bool((config.get("score") or {}).get("per_position", True))


rule score:
    input:
        model=f"{OUT}/{{sample}}/pretrain",
        genome=sample_file("genome"),
    output:
        tsv=f"{OUT}/{{sample}}/score/scores.tsv",
        **({"bedgraph": f"{OUT}/{{sample}}/score/bits.bedgraph"} if _PER_POSITION else {}),
    params:
        checkpoint=lambda w, input: os.path.join(input.model, "checkpoint"),
        per_position=lambda w, output: ["--per-position", output.bedgraph] if _PER_POSITION else [],
        args=lambda w: cli_args("score", "per_position"),
        device=config["device"],
    log:
        log_path("score"),
    threads: res("score", "threads", 2)
    resources:
        mem_mb=res("score", "mem_mb", 8000),
        gpu=res("score", "gpu", 1),
        runtime=res("score", "runtime", 120),
    conda:
        "../envs/seqssm.yaml"
    shell:
        "OMP_NUM_THREADS={threads:q} seqssm score {params.checkpoint:q} {input.genome:q} --out {output.tsv:q} {params.per_position:q} {params.args:q} --device {params.device:q} > {log:q} 2>&1"


rule score_variants:
    input:
        model=f"{OUT}/{{sample}}/pretrain",
        genome=sample_file("genome"),
        vcf=sample_file("vcf"),
    output:
        vcf=f"{OUT}/{{sample}}/score_variants/variants.vcf.gz",
        tbi=f"{OUT}/{{sample}}/score_variants/variants.vcf.gz.tbi",
        tsv=f"{OUT}/{{sample}}/score_variants/variants.tsv",
    params:
        checkpoint=lambda w, input: os.path.join(input.model, "checkpoint"),
        args=lambda w: cli_args("score_variants"),
        device=config["device"],
    log:
        log_path("score_variants"),
    threads: res("score_variants", "threads", 2)
    resources:
        mem_mb=res("score_variants", "mem_mb", 8000),
        gpu=res("score_variants", "gpu", 1),
        runtime=res("score_variants", "runtime", 120),
    conda:
        "../envs/seqssm.yaml"
    shell:
        "OMP_NUM_THREADS={threads:q} seqssm score-variants {params.checkpoint:q} {input.vcf:q} --genome {input.genome:q} --out {output.vcf:q} --tsv {output.tsv:q} {params.args:q} --device {params.device:q} > {log:q} 2>&1"

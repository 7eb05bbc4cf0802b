// SEQSSM_SCORE_VARIANTS: Log-likelihood ratio (bits) of each ALT allele of the sample's VCF against REF.
// One `seqssm score-variants` call; its options come from ext.args (conf/modules.config), already
// shell-quoted there; every other value is quoted here with q().

// A value shell-quoted for the script: in single quotes, each ' inside written '\'' (close, escaped quote,
// reopen), so staged names and values with spaces, ; or $ stay one literal word.
def q(value) { "'" + value.toString().replace("'", "'\\''") + "'" }

process SEQSSM_SCORE_VARIANTS {
    tag "$meta.id"
    label 'process_gpu'
    conda "${moduleDir}/../environment.yml"

    input:
    tuple val(meta), path(model), path(genome), path(vcf)

    output:
    tuple val(meta), path('score_variants/variants.vcf.gz'), path('score_variants/variants.vcf.gz.tbi'), emit: vcf
    tuple val(meta), path('score_variants/variants.tsv'), emit: tsv
    path 'versions.yml', emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def checkpoint = "${model}/checkpoint"
    """
    mkdir -p score_variants
    OMP_NUM_THREADS=${q(task.cpus)} seqssm score-variants ${q(checkpoint)} ${q(vcf)} --genome ${q(genome)} --out score_variants/variants.vcf.gz --tsv score_variants/variants.tsv ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        seqssm: \$(python -c 'import seqssm; print(seqssm.__version__)')
        torch: \$(python -c 'import torch; print(torch.__version__)')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p score_variants
    touch score_variants/variants.vcf.gz score_variants/variants.vcf.gz.tbi score_variants/variants.tsv
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        seqssm: stub
    END_VERSIONS
    """
}

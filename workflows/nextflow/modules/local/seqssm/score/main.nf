// SEQSSM_SCORE: Bits per record (and per base, with --per-position in ext.args) of the sample's genome.
// One `seqssm score` call; its options come from ext.args (conf/modules.config), already
// shell-quoted there; every other value is quoted here with q().

// A value shell-quoted for the script: in single quotes, each ' inside written '\'' (close, escaped quote,
// reopen), so staged names and values with spaces, ; or $ stay one literal word.
def q(value) { "'" + value.toString().replace("'", "'\\''") + "'" }

process SEQSSM_SCORE {
    tag "$meta.id"
    label 'process_gpu'
    conda "${moduleDir}/../environment.yml"

    input:
    tuple val(meta), path(model), path(genome)

    output:
    tuple val(meta), path('score/scores.tsv'), emit: scores
    tuple val(meta), path('score/bits.bedgraph'), emit: bedgraph, optional: true
    path 'versions.yml', emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def checkpoint = "${model}/checkpoint"
    """
    mkdir -p score
    OMP_NUM_THREADS=${q(task.cpus)} seqssm score ${q(checkpoint)} ${q(genome)} --out score/scores.tsv ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        seqssm: \$(python -c 'import seqssm; print(seqssm.__version__)')
        torch: \$(python -c 'import torch; print(torch.__version__)')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p score
    touch score/scores.tsv score/bits.bedgraph
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        seqssm: stub
    END_VERSIONS
    """
}

// SEQSSM_EMBED: Embeddings of the sample's genome windows from its pretrained model.
// One `seqssm embed` call; its options come from ext.args (conf/modules.config), already
// shell-quoted there; every other value is quoted here with q().

// A value shell-quoted for the script: in single quotes, each ' inside written '\'' (close, escaped quote,
// reopen), so staged names and values with spaces, ; or $ stay one literal word.
def q(value) { "'" + value.toString().replace("'", "'\\''") + "'" }

process SEQSSM_EMBED {
    tag "$meta.id"
    label 'process_gpu'
    conda "${moduleDir}/../environment.yml"

    input:
    tuple val(meta), path(model), path(genome)

    output:
    tuple val(meta), path('embed'), emit: embeddings
    path 'versions.yml', emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def checkpoint = "${model}/checkpoint"
    """
    OMP_NUM_THREADS=${q(task.cpus)} seqssm embed ${q(checkpoint)} ${q(genome)} --out embed ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        seqssm: \$(python -c 'import seqssm; print(seqssm.__version__)')
        torch: \$(python -c 'import torch; print(torch.__version__)')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p embed
    touch embed/embeddings.npy
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        seqssm: stub
    END_VERSIONS
    """
}

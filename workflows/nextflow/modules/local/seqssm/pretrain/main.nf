// SEQSSM_PRETRAIN: Pretrain a language model on the sample's genome.
// One `seqssm pretrain` call; its options come from ext.args (conf/modules.config), already
// shell-quoted there; every other value is quoted here with q().

// A value shell-quoted for the script: in single quotes, each ' inside written '\'' (close, escaped quote,
// reopen), so staged names and values with spaces, ; or $ stay one literal word.
def q(value) { "'" + value.toString().replace("'", "'\\''") + "'" }

process SEQSSM_PRETRAIN {
    tag "$meta.id"
    label 'process_gpu'
    conda "${moduleDir}/../environment.yml"

    input:
    tuple val(meta), path(genome)

    output:
    tuple val(meta), path('pretrain'), emit: model
    path 'versions.yml', emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    OMP_NUM_THREADS=${q(task.cpus)} seqssm pretrain ${q(genome)} --out pretrain ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        seqssm: \$(python -c 'import seqssm; print(seqssm.__version__)')
        torch: \$(python -c 'import torch; print(torch.__version__)')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p pretrain/checkpoint
    touch pretrain/train_log.tsv pretrain/run.json pretrain/checkpoint/model.safetensors
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        seqssm: stub
    END_VERSIONS
    """
}

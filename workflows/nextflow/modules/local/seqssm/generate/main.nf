// SEQSSM_GENERATE: Sample DNA from the pretrained model to FASTA.
// One `seqssm generate` call; its options come from ext.args (conf/modules.config), already
// shell-quoted there; every other value is quoted here with q().

// A value shell-quoted for the script: in single quotes, each ' inside written '\'' (close, escaped quote,
// reopen), so staged names and values with spaces, ; or $ stay one literal word.
def q(value) { "'" + value.toString().replace("'", "'\\''") + "'" }

process SEQSSM_GENERATE {
    tag "$meta.id"
    label 'process_gpu'
    conda "${moduleDir}/../environment.yml"

    input:
    tuple val(meta), path(model)

    output:
    tuple val(meta), path('generated.fa'), emit: fasta
    path 'versions.yml', emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def checkpoint = "${model}/checkpoint"
    """
    OMP_NUM_THREADS=${q(task.cpus)} seqssm generate ${q(checkpoint)} --out generated.fa ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        seqssm: \$(python -c 'import seqssm; print(seqssm.__version__)')
        torch: \$(python -c 'import torch; print(torch.__version__)')
    END_VERSIONS
    """

    stub:
    """
    touch generated.fa
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        seqssm: stub
    END_VERSIONS
    """
}

"""The quick-start: pretrain on the bundled lambda phage genome, embed it, generate DNA."""

from __future__ import annotations

from pathlib import Path

from seqssm.data import lambda_phage_fasta
from seqssm.pipelines.common import OutputPlan
from seqssm.pipelines.configs_sequence import DemoConfig
from seqssm.pipelines.embed import EmbedConfig, embed, embed_outputs
from seqssm.pipelines.generate import GenerateConfig, generate, generate_outputs
from seqssm.pipelines.pretrain import PretrainConfig, pretrain, pretrain_outputs


def demo(cfg: DemoConfig, echo=print) -> dict:
    """Run the main job end to end on the bundled genome and return where each output is.

    The outputs of all three steps are checked before the first starts, so a demo run into an earlier one's
    folder stops at once (unless ``overwrite``) instead of after pretraining.
    """
    out = Path(cfg.out)
    fasta = lambda_phage_fasta()
    checkpoint = out / "pretrain" / "checkpoint"
    pretrain_cfg = PretrainConfig(
        data=str(fasta), out=str(out / "pretrain"), window=256, batch_size=16, steps=cfg.steps, lr=3e-3,
        warmup_steps=30, val_every=50, val_windows=64, max_minutes=cfg.minutes, seed=cfg.seed,
        device=cfg.device, d_model=128, n_layer=2, overwrite=cfg.overwrite,
    )
    embed_cfg = EmbedConfig(checkpoint=str(checkpoint), fasta=str(fasta), out=str(out / "embeddings"), window=1024,
                            device=cfg.device, overwrite=cfg.overwrite)
    generate_cfg = GenerateConfig(checkpoint=str(checkpoint), out=str(out / "generated.fa"), length=1000,
                                  seed=cfg.seed, device=cfg.device, temperature=0.9, overwrite=cfg.overwrite)
    OutputPlan([], folder=out).check()  # --out itself must be (or become) a folder
    for plan in (pretrain_outputs(pretrain_cfg), embed_outputs(embed_cfg), generate_outputs(generate_cfg)):
        plan.check()
    echo(f"[1/3] pretraining a causal Mamba DNA model on {fasta.name} (48,502 bp) for at most "
         f"{cfg.minutes:g} min")
    result = pretrain(pretrain_cfg)
    echo(f"      {result.steps} steps in {result.seconds:.0f} s; validation {result.val_bits_per_token:.3f} bits per "
         f"base (a uniform model: {result.uniform_bits:.1f})")
    echo("[2/3] embedding the genome in 1 kb windows")
    emb = embed(embed_cfg)
    echo(f"      {emb.count} windows × {emb.dim} dims")
    echo("[3/3] generating 1 kb of DNA")
    fasta_out = generate(generate_cfg)
    outputs = {
        "checkpoint": result.checkpoint,
        "training log": result.checkpoint.parent / "train_log.tsv",
        "embeddings": emb.embeddings,
        "embedding index": emb.index,
        "generated DNA": fasta_out,
    }
    echo("outputs:")
    for what, path in outputs.items():
        echo(f"  {what:16s} {path}")
    return {"val_bits_per_base": result.val_bits_per_token, **{k: str(v) for k, v in outputs.items()}}

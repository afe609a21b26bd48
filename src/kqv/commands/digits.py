"""`kqv digits …`: train, use and plot the NumPy digits network (step 1 of the path)."""

import sys
import time
from pathlib import Path

import numpy as np

from kqv.commands._common import (
    add_command,
    add_group,
    add_json_flag,
    emit_json,
    int_list,
    non_negative_float,
    positive_float,
    positive_int,
)
from kqv.errors import UserError

MODEL_NAME = "model.safetensors"
DEFAULT_OUT = f"runs/digits/{MODEL_NAME}"

# Learning rate and L2 strength that suit each kind of data (chosen on the validation
# set; see README): the 1,257 embedded images want big steps, MNIST's 50,000 smaller ones.
DATA_DEFAULTS = {
    "embedded": {"eta": 2.0, "lmbda": 0.1},
    "idx": {"eta": 0.5, "lmbda": 5.0},
}


def register(groups) -> None:
    sub = add_group(
        groups,
        "digits",
        "step 1: a NumPy network with hand-written backprop that learns handwritten digits",
        "  kqv digits train --plot                 # the curves and the misclassified digits beside the model\n"
        "  kqv digits predict runs/digits/model.safetensors my-digit.png\n",
    )

    train = add_command(
        sub,
        "train",
        "train the network with mini-batch SGD; print accuracy per epoch and a confusion matrix",
        "  kqv digits train                                   # embedded 8x8 digits, ~1 s\n"
        "  kqv digits train --data /usr/share/datasets/fashion-mnist --epochs 30 --json\n"
        "  kqv digits train --hidden 100,30 --cost quadratic --plot\n",
        run_train,
    )
    train.add_argument("--data", help="folder of MNIST-format IDX files (default: the embedded 8x8 digits)")
    train.add_argument("--hidden", type=int_list, default=[100], help="hidden layer sizes, e.g. 100 or 100,30")
    train.add_argument("--cost", choices=["cross-entropy", "quadratic"], default="cross-entropy")
    train.add_argument("--epochs", type=positive_int, default=30)
    train.add_argument("--batch-size", type=positive_int, default=10)
    train.add_argument("--eta", type=positive_float, help="learning rate (default: 2.0 embedded, 0.5 IDX)")
    train.add_argument("--lmbda", type=non_negative_float, help="L2 strength λ (default: 0.1 embedded, 5.0 IDX)")
    train.add_argument(
        "--schedule",
        choices=["cosine", "constant"],
        default="cosine",
        help="learning rate per epoch: cosine decay from --eta towards 0 (default), or constant as in Nielsen",
    )
    train.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        default="float32",
        help="arithmetic of training (default float32; the gradient checks run in float64)",
    )
    train.add_argument("--seed", type=int, default=0, help="seeds the weights and the shuffling")
    train.add_argument("--validation-size", type=int, default=10_000, help="IDX only: last N training images held out")
    train.add_argument(
        "--out",
        help=f"model file to write, or a folder for its {MODEL_NAME} (default {DEFAULT_OUT}, or runs/digits-2/…, "
        "… if that holds a model)",
    )
    train.add_argument("--force", action="store_true", help="replace the model already in --out")
    train.add_argument("--plot", action="store_true", help="also write the plots of `kqv digits plot`")
    add_json_flag(train)

    predict = add_command(
        sub,
        "predict",
        "classify your own images of digits and print each class's probability",
        "  kqv digits predict runs/digits/model.safetensors my-seven.png photo-of-a-3.jpg\n",
        run_predict,
    )
    predict.add_argument(
        "model", help=f"a model file written by `kqv digits train`, or its folder (FOLDER/{MODEL_NAME})"
    )
    predict.add_argument("images", nargs="+", help="PNG/JPEG/... images, any size, either polarity")
    predict.add_argument("--save-normalised", metavar="DIR", help="also save each image as the network sees it")
    add_json_flag(predict)

    plot = add_command(
        sub,
        "plot",
        "plot accuracy and cost per epoch, and a grid of misclassified test images",
        "  kqv digits plot runs/digits/model.safetensors\n"
        "  kqv digits plot model.safetensors --data mnist/ --out plots/\n",
        run_plot,
    )
    plot.add_argument("model", help=f"a model file written by `kqv digits train`, or its folder (FOLDER/{MODEL_NAME})")
    plot.add_argument("--data", help="where the test images are, if not where the model was trained from")
    plot.add_argument("--out", help="folder for the PNGs (default: beside the model)")
    add_json_flag(plot)


def model_file(path: str | Path) -> Path:
    """A model file, or a run folder that holds one (FOLDER/model.safetensors) -> the file."""
    path = Path(path)
    return path / MODEL_NAME if path.is_dir() else path


def output_file(out: str | None, force: bool) -> Path:
    """Where `kqv digits train` writes: --out (refused if it holds a model, unless --force), or runs/digits,
    runs/digits-2, … whichever holds no model yet. A finished model is never replaced without --force."""
    if out is not None:
        path = model_file(out)
        if path.exists() and not force:
            raise UserError(
                f"{path} already holds a trained model; pass --force to replace it, or choose another --out"
            )
        return path
    base = Path(DEFAULT_OUT).parent
    for n in range(1, 10_000):
        path = (base if n == 1 else base.with_name(f"{base.name}-{n}")) / MODEL_NAME
        if not path.exists() and not path.is_symlink():
            return path
    raise UserError(f"{base}: 9,999 digits models already exist; choose a file with --out")


def _load_data(data: str | None, validation_size: int):
    from kqv.data.digits import load_digits_data

    return load_digits_data(data, validation_size)


def format_confusion(counts: np.ndarray) -> str:
    k = counts.shape[0]
    width = max(5, len(str(counts.max())) + 1)
    head = "true\\pred" + "".join(f"{j:>{width}}" for j in range(k))
    rows = [f"{i:>9}" + "".join(f"{c:>{width}}" for c in counts[i]) for i in range(k)]
    return "\n".join([head, *rows])


def run_train(args) -> None:
    from kqv.data.images import typical_shapes
    from kqv.progress import progress_bar, progress_enabled
    from kqv.scratch import Network
    from kqv.scratch.checkpoint import save_network
    from kqv.scratch.train import confusion_matrix, sgd

    started = time.perf_counter()
    out = output_file(args.out, args.force)
    data = _load_data(args.data, args.validation_size)
    defaults = DATA_DEFAULTS["embedded" if args.data is None else "idx"]
    eta = args.eta if args.eta is not None else defaults["eta"]
    lmbda = args.lmbda if args.lmbda is not None else defaults["lmbda"]
    sizes = [data.num_inputs, *args.hidden, data.num_classes]
    net = Network(sizes, cost=args.cost, seed=args.seed, dtype=np.dtype(args.dtype))
    hyper = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "eta": eta,
        "schedule": args.schedule,
        "lmbda": lmbda,
        "seed": args.seed,
    }
    print(
        f"data: {data.source} — {len(data.train.labels)} train / {len(data.validation.labels)} validation / "
        f"{len(data.test.labels)} test images of {data.image_shape[0]}x{data.image_shape[1]}"
    )
    print(f"network: {sizes}, {args.cost} cost, {net.num_parameters:,} parameters; {hyper}")

    bar, smoothed = None, 0.0

    def on_batch(epoch: int, step: int, n_steps: int, cost: float) -> None:
        nonlocal bar, smoothed
        if step == 1:
            bar = progress_bar(len(data.train.labels), f"epoch {epoch}/{args.epochs}", unit="img")
            smoothed = cost
        smoothed = 0.98 * smoothed + 0.02 * cost  # running mean of the batch costs
        bar.update(min(args.batch_size, len(data.train.labels) - (step - 1) * args.batch_size))
        bar.set_postfix(cost=f"{smoothed:.4f}", refresh=False)
        if step == n_steps:
            bar.close()

    def on_epoch(r) -> None:
        print(
            f"epoch {r.epoch:>3}/{args.epochs}  train cost {r.train_cost:.4f}  "
            f"validation acc {r.validation_accuracy:.4f}  test acc {r.test_accuracy:.4f}  "
            f"({r.seconds:.2f} s, {r.images_per_second:,.0f} img/s)",
            flush=True,
        )

    history = sgd(
        net,
        data.train,
        args.epochs,
        args.batch_size,
        eta,
        lmbda,
        validation=data.validation,
        test=data.test,
        seed=args.seed,
        schedule=args.schedule,
        on_batch=on_batch if progress_enabled() else None,
        on_epoch=on_epoch,
    )
    counts = confusion_matrix(net, data.test)
    print(f"\nconfusion matrix on the {len(data.test.labels)} test images (rows: true digit, columns: predicted)")
    print(format_confusion(counts))

    final = history[-1]
    best = max(history, key=lambda r: r.validation_accuracy)
    extra = {
        "data": {"source": data.source, "validation_size": args.validation_size},
        "image_shape": list(data.image_shape),
        "preprocess": {**data.preprocess, "typical": typical_shapes(data.train.x.reshape(-1, *data.image_shape))},
        "hyperparameters": hyper,
        "history": [r.to_dict() for r in history],
    }
    if args.out is None:  # another training took this name meanwhile: the next free one
        out = output_file(None, False) if out.exists() else out
    model_path = save_network(out, net, extra)
    print(f"\ntest accuracy {final.test_accuracy:.4f}; model saved to {model_path}")
    plots = _write_plots(net, extra, data, model_path.parent) if args.plot else []
    for p in plots:
        print(f"plot written to {p}")
    if args.json:
        train_seconds = sum(r.seconds for r in history)
        emit_json(
            {
                "command": "digits train",
                "data": data.source,
                "sizes": sizes,
                "cost": args.cost,
                "hyperparameters": hyper,
                "test_accuracy": final.test_accuracy,
                "validation_accuracy": final.validation_accuracy,
                "train_cost": final.train_cost,
                "best_validation": {"epoch": best.epoch, "accuracy": best.validation_accuracy},
                "confusion_matrix": counts,
                "history": [r.to_dict() for r in history],
                "model": str(model_path),
                "plots": [str(p) for p in plots],
                "train_seconds": train_seconds,
                "images_per_second": len(data.train.labels) * len(history) / train_seconds,
                "wall_seconds": time.perf_counter() - started,
            }
        )


def run_predict(args) -> None:
    from kqv.data.images import load_digit_image, shape_warnings
    from kqv.scratch.checkpoint import load_network

    net, config = load_network(model_file(args.model))
    shape = tuple(config["image_shape"])
    prep = config["preprocess"]
    inputs = np.stack([load_digit_image(p, shape, prep["box"], prep["center"]) for p in args.images])  # (N, n_0)
    probs = net.feedforward(inputs)  # (N, n_L)
    if net.cost.name == "quadratic":  # sigmoid outputs: rescale to sum to 1 for display
        probs = probs / probs.sum(axis=1, keepdims=True)
    results = []
    for path, x, p in zip(args.images, inputs, probs, strict=True):
        label = int(p.argmax())
        print(f"{path}: {label}  (p = {p[label]:.3f})")
        unlike = shape_warnings(x.reshape(shape), prep["typical"]) if "typical" in prep else []
        if unlike:  # (models trained before the measures were recorded have none)
            print(f"kqv: warning: {path}: {'; '.join(unlike)}; the prediction may mean little", file=sys.stderr)
        for cls, pk in enumerate(p):
            print(f"  {cls}  {pk:6.3f}  {'█' * round(pk * 40)}")
        if args.save_normalised:
            out = _save_normalised(x.reshape(shape), path, args.save_normalised)
            print(f"  as the network sees it: {out}")
        results.append({"image": path, "prediction": label, "probabilities": p, "warnings": unlike})
    if args.json:
        emit_json({"command": "digits predict", "model": args.model, "results": results})


def _save_normalised(image: np.ndarray, source: str, folder: str) -> Path:
    from PIL import Image

    out = Path(folder) / f"{Path(source).stem}.normalised.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    big = Image.fromarray((image * 255).astype(np.uint8)).resize((image.shape[1] * 8, image.shape[0] * 8), 0)
    big.save(out)
    return out


def _write_plots(net, config: dict, data, folder: Path) -> list[Path]:
    from kqv.viz.digits import plot_history, plot_misclassified

    return [
        plot_history(config["history"], folder / "history.png"),
        plot_misclassified(net, data.test, data.image_shape, folder / "misclassified.png"),
    ]


def run_plot(args) -> None:
    from kqv.scratch.checkpoint import load_network

    model = model_file(args.model)
    net, config = load_network(model)
    source = args.data or config["data"]["source"]
    if source != "embedded" and not Path(source).exists():
        raise UserError(f"the model was trained on {source}, which is not there now; pass --data DIR")
    data = _load_data(None if source == "embedded" else source, config["data"]["validation_size"])
    if data.num_inputs != net.sizes[0]:
        raise UserError(f"{source} has {data.num_inputs} pixels per image but the model expects {net.sizes[0]}")
    folder = Path(args.out) if args.out else model.parent
    plots = _write_plots(net, config, data, folder)
    for p in plots:
        print(f"plot written to {p}")
    if args.json:
        emit_json({"command": "digits plot", "model": args.model, "plots": [str(p) for p in plots]})

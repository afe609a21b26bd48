"""`kqv bench …`: speed measured against a baseline in the same run, reported as a ratio."""

from kqv.commands._common import add_command, add_group, add_json_flag, emit_json, int_list, positive_int


def register(groups) -> None:
    sub = add_group(
        groups,
        "bench",
        "benchmarks: kqv against a reference measured in the same run, reported as ratios",
        "  kqv bench digits --json\n",
        metavar="BENCHMARK",
    )
    digits = add_command(
        sub,
        "digits",
        "images/s of one SGD epoch: matrix-form backprop vs a per-sample loop (Nielsen's network.py style)",
        "  kqv bench digits                               # embedded 8x8 digits, [64, 100, 10]\n"
        "  kqv bench digits --data ../shared/data/mnist --limit 10000 --json\n",
        run_digits,
    )
    digits.add_argument("--data", help="folder of MNIST-format IDX files (default: the embedded digits)")
    digits.add_argument("--hidden", type=int_list, default=[100], help="hidden layer sizes (default 100)")
    digits.add_argument(
        "--batch-sizes", type=int_list, default=[10, 32, 128], help="mini-batch sizes to time (default 10,32,128)"
    )
    digits.add_argument("--limit", type=positive_int, help="time on the first N training images only")
    digits.add_argument(
        "--dtype", choices=["float32", "float64"], default="float32", help="arithmetic of both (default float32)"
    )
    digits.add_argument("--repeats", type=positive_int, default=3, help="best of N epochs (default 3)")
    add_json_flag(digits)


def run_digits(args) -> None:
    import numpy as np

    from kqv.bench.digits import as_dict, bench_digits, machine_info
    from kqv.data.digits import load_digits_data
    from kqv.scratch.train import Labeled

    data = load_digits_data(args.data)
    train = data.train
    if args.limit:
        train = Labeled(train.x[: args.limit], train.labels[: args.limit])
    sizes = [data.num_inputs, *args.hidden, data.num_classes]
    info = machine_info()
    print(f"digits SGD epoch, network {sizes}, {len(train.labels)} images from {data.source}, {args.dtype}")
    print(f"machine: {info}")
    print(f"{'batch':>6} {'matrix img/s':>14} {'per-sample img/s':>17} {'speedup':>8} {'max |Δw|':>9}")
    results = []
    for batch_size in args.batch_sizes:
        r = bench_digits(train, sizes, batch_size=batch_size, repeats=args.repeats, dtype=np.dtype(args.dtype))
        print(
            f"{batch_size:>6} {r.matrix_images_per_second:>14,.0f} {r.textbook_images_per_second:>17,.0f} "
            f"{r.speedup:>7.1f}x {r.max_weight_difference:>9.1e}",
            flush=True,
        )
        results.append(as_dict(r))
    if args.json:
        emit_json({"command": "bench digits", "data": data.source, "machine": info, "results": results})

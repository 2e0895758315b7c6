"""The commands' stages, each a config dataclass and a `run_*` function over the library:

    calibrate.run_calibration(CalibrateConfig(...))   # bild-align calibrate
    train.run_training(load_recipe(...))              # bild-align train
    evaluate.run_eval(EvalConfig(...))                # bild-align eval
    chat.Console(...).run(lines)                      # bild-align chat
    benchmark.run_benchmark(BenchConfig(...))         # bild-align bench
    demo.run_demo(DemoConfig(...))                    # bild-align demo: calibrate -> train -> eval

Stages do not import each other, except the demo, which chains three of them.
"""

from . import summary


def pytest_terminal_summary(terminalreporter):
    # One line per configuration, shown without -s, for quoting.
    if summary.RESULTS:
        terminalreporter.section("querystash differential fuzzer")
        for result in summary.RESULTS:
            terminalreporter.write_line(result.summary())

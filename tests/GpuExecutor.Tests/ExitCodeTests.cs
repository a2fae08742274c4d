using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;

namespace GpuExecutor.Tests;

public sealed class ExitCodeTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("exit-codes").FullName;

    private FakeEnvironment Environment(string buildCode = "1", string systemCode = "2") => new(new()
    {
        ["BUILD_FAILURE_EXIT_CODE"] = buildCode,
        ["SYSTEM_FAILURE_EXIT_CODE"] = systemCode,
        ["BUILD_EXIT_CODE_FILE"] = Path.Combine(_directory, "build_exit_code"),
    });

    [Fact]
    public void A_build_failure_exits_with_the_runners_code_and_records_the_scripts_real_code()
    {
        var log = new StringWriter();

        var exitCode = ExitCodes.FromOutcome(new BuildFailureException("", scriptExitCode: 42), Environment(buildCode: "17"), log);

        Assert.Equal(17, exitCode);
        Assert.Equal("42\n", File.ReadAllText(Path.Combine(_directory, "build_exit_code")));
    }

    [Fact]
    public void A_system_failure_exits_with_the_runners_system_code()
    {
        var log = new StringWriter();

        var exitCode = ExitCodes.FromOutcome(new SystemFailureException("daemon gone"), Environment(systemCode: "23"), log);

        Assert.Equal(23, exitCode);
        Assert.Contains("system failure: daemon gone", log.ToString());
        Assert.False(File.Exists(Path.Combine(_directory, "build_exit_code")));
    }

    [Fact]
    public void An_unexpected_exception_is_a_system_failure_never_another_code()
    {
        var log = new StringWriter();

        var exitCode = ExitCodes.FromOutcome(new InvalidOperationException("bug"), Environment(), log);

        Assert.Equal(2, exitCode);
        Assert.Contains("unexpected error", log.ToString());
    }

    [Fact]
    public void Without_the_runners_variables_the_protocol_defaults_apply() =>
        Assert.Equal(1, ExitCodes.FromOutcome(new BuildFailureException("x"), new FakeEnvironment([]), TextWriter.Null));

    public void Dispose() => Directory.Delete(_directory, recursive: true);
}

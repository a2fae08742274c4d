using System.Diagnostics;
using System.Text;
using GpuExecutor.Simulation;

namespace GpuExecutor.Tests;

/// <summary>These run the generated text through the host's real bash: quoting is only right if bash agrees.</summary>
public sealed class ScriptTests
{
    public static TheoryData<string> HostileValues => new()
    {
        "plain",
        "",
        "single ' quote and double \" quote",
        "$(touch /tmp/gpu-executor-pwned) and `id` and ${HOME} and $HOME",
        "back\\slash \\n not a newline \\' \\\\",
        "new\nlines\r\nand\ttabs",
        "control \u0001\u001b[31m\u007f bytes",
        "unicode: 日本語 ✓ é",
        new string('x', 100_000) + "'$(id)'",
    };

    [Theory]
    [MemberData(nameof(HostileValues))]
    public async Task Ansi_c_quoting_reaches_bash_byte_for_byte(string value)
    {
        var output = await RunBashAsync($"printf '%s' {BashQuoting.AnsiC(value)}");

        Assert.Equal(value, output);
    }

    [Fact]
    public async Task A_runner_style_script_exports_every_variable_unchanged_and_runs_in_the_project_dir()
    {
        var projectDir = Directory.CreateTempSubdirectory("project").FullName;
        var variables = new Dictionary<string, string>
        {
            ["HOSTILE"] = "a'b\"c $(echo pwned) `id` \\ end\nline2",
            ["CI_JOB_STATUS"] = "failed",
        };
        var script = RunnerScriptBuilder.Build(variables, projectDir,
        [
            "printf '%s|%s|%s' \"$HOSTILE\" \"$CI_JOB_STATUS\" \"$PWD\"",
        ]);

        var output = await RunBashAsync(script);

        Assert.Equal($"{variables["HOSTILE"]}|failed|{projectDir}", output);
    }

    [Fact]
    public async Task A_failing_command_ends_the_script_with_its_exit_code_like_the_runners()
    {
        var script = RunnerScriptBuilder.Build([], Path.GetTempPath(), RunnerScriptBuilder.UserCommands(["echo before", "exit 42", "echo after"]));

        var (exitCode, output) = await RunBashWithExitCodeAsync(script);

        Assert.Equal(42, exitCode);
        Assert.Contains("before", output);
        Assert.DoesNotContain("\nafter", output);
    }

    private static async Task<string> RunBashAsync(string script)
    {
        var (exitCode, output) = await RunBashWithExitCodeAsync(script);
        Assert.Equal(0, exitCode);
        return output;
    }

    private static async Task<(int ExitCode, string Output)> RunBashWithExitCodeAsync(string script)
    {
        // The script goes in on stdin, as the executor feeds it to bash in the container.
        var start = new ProcessStartInfo("bash")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
            StandardOutputEncoding = Encoding.UTF8,
            StandardInputEncoding = new UTF8Encoding(false),
        };
        using var bash = Process.Start(start)!;
        var output = bash.StandardOutput.ReadToEndAsync();
        await bash.StandardInput.WriteAsync(script);
        bash.StandardInput.Close();
        await bash.WaitForExitAsync();
        return (bash.ExitCode, await output);
    }
}

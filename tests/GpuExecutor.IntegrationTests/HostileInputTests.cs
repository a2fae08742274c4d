namespace GpuExecutor.IntegrationTests;

public sealed class HostileInputTests
{
    [Fact]
    public async Task Variable_values_reach_the_script_byte_for_byte_and_no_host_shell_interprets_them()
    {
        using var workspace = new ExecutorWorkspace();
        const long jobId = 7301;
        var hostMarker = Path.Combine(Path.GetTempPath(), $"gpu-executor-pwned-{Guid.NewGuid():N}");
        var values = new Dictionary<string, string>
        {
            ["QUOTES"] = "single ' double \" mixed '\"'\"",
            ["SUBSTITUTION"] = $"$(touch {hostMarker}) and ${{HOME}} and $HOME",
            ["BACKTICKS"] = $"`touch {hostMarker}` `id`",
            ["NEWLINES"] = "line one\nline two\r\nline three\n\n",
            ["BACKSLASHES"] = "\\ \\\\ \\n \\' \\x41",
            ["LARGE"] = string.Concat(Enumerable.Repeat("0123456789abcdef'\"$`\\\n", 100 * 1024 / 22)),
        };

        var run = await workspace.SimulateAsync(new
        {
            job_id = jobId,
            image = Testbed.TestImage,
            variables = values,
            script = values.Keys.Select(key => $"printf '%s' \"${key}\" > {key}.out").ToArray(),
        });

        Assert.Equal("success", run.Result.Outcome);
        Assert.True(values["LARGE"].Length >= 100_000);
        var projectDir = workspace.ProjectDirOnHost(jobId);
        foreach (var (key, value) in values)
            Assert.Equal(Text.Utf8.GetBytes(value), File.ReadAllBytes(Path.Combine(projectDir, $"{key}.out")));
        Assert.False(File.Exists(hostMarker), "a host shell ran a substitution from a variable");
    }
}

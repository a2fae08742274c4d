using GpuExecutor.Configuration;
using GpuExecutor.Registration;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// `register` against a fake gitlab-runner (none can be installed here) that records the argv
/// and the environment it was given, as the real one would read them.
/// </summary>
public sealed class RegisterTests
{
    private const string RunnerToken = "glrt-register-test-0c9e2b";

    private static string FakeGitLabRunner(ExecutorWorkspace workspace)
    {
        var path = Path.Combine(workspace.Root, "gitlab-runner");
        File.WriteAllText(path, $"#!/bin/bash\nprintf '%s\\n' \"$@\" > '{workspace.Root}/argv.txt'\nprintf '%s' \"$CI_SERVER_TOKEN\" > '{workspace.Root}/token.txt'\necho 'Runner registered successfully.'\n");
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return path;
    }

    private static Task<(int ExitCode, string Stdout, string Stderr)> RegisterAsync(ExecutorWorkspace workspace, params string[] options) =>
        workspace.CallVerbAsync(new Dictionary<string, string?> { ["RUNNER_TOKEN"] = RunnerToken },
            ["register", "--url", "https://gitlab.example.com/", "--name", "gpu-host-07", "--tags", "a100-x8", "--gitlab-runner", FakeGitLabRunner(workspace), "--template", Path.Combine(workspace.Root, "template.toml"), .. options]);

    [Fact]
    public async Task It_runs_gitlab_runner_register_with_a_template_that_agrees_with_the_config_and_the_token_only_in_its_environment()
    {
        using var workspace = new ExecutorWorkspace(stopGraceSeconds: 20);

        var (exitCode, stdout, stderr) = await RegisterAsync(workspace);

        Assert.True(exitCode == 0, stdout + stderr);
        var template = Path.Combine(workspace.Root, "template.toml");
        var argv = File.ReadAllLines(Path.Combine(workspace.Root, "argv.txt"));
        Assert.Equal(["register", "--non-interactive", "--url", "https://gitlab.example.com", "--executor", "custom", "--name", "gpu-host-07", "--template-config", template], argv);
        Assert.Equal(RunnerToken, File.ReadAllText(Path.Combine(workspace.Root, "token.txt")));
        // A runner authentication token carries its tags: they are not passed, and the admin is told where they go.
        Assert.Contains("tags a100-x8: a runner authentication token carries the tags", stdout);
        Assert.Contains("gitlab-runner: Runner registered successfully.", stdout);
        Assert.DoesNotContain(RunnerToken, stdout + stderr);

        var entry = Assert.Single(RunnerEntry.ParseFile(File.ReadAllText(template), template));
        var config = ConfigLoader.LoadFile(workspace.ConfigPath);
        Assert.Equal([], entry.DisagreementsWith(config).Select(problem => problem.Problem));
        Assert.Equal((config.Builds.ContainerDir, config.Cache.ContainerDir, 600L), (entry.BuildsDir, entry.CacheDir, entry.EffectiveGracefulKillTimeout));
        Assert.All(RunnerEntry.Stages, stage => Assert.Equal(["--config", workspace.ConfigPath, stage], entry.Args[stage]));
        Assert.All(RunnerEntry.Stages, stage => Assert.Equal(Testbed.Binary, entry.Execs[stage]));

        var log = File.ReadAllText(Path.Combine(workspace.Root, "state", "log", "events.jsonl"));
        Assert.Contains("\"verb\":\"register\"", log);
        Assert.DoesNotContain(RunnerToken, log);
    }

    [Fact]
    public async Task A_legacy_registration_token_gets_the_tags_on_the_command_line()
    {
        using var workspace = new ExecutorWorkspace();
        var (exitCode, stdout, stderr) = await workspace.CallVerbAsync(new Dictionary<string, string?> { ["OLD_TOKEN"] = "GR1348941legacy" },
            "register", "--url", "https://gitlab.example.com", "--name", "old", "--tags", "a100-x8,nvlink", "--token-env", "OLD_TOKEN", "--gitlab-runner", FakeGitLabRunner(workspace));

        Assert.True(exitCode == 0, stdout + stderr);
        var argv = File.ReadAllLines(Path.Combine(workspace.Root, "argv.txt"));
        Assert.Equal("a100-x8,nvlink", argv[Array.IndexOf(argv, "--tag-list") + 1]);
        Assert.DoesNotContain("GR1348941legacy", argv);
    }

    [Theory]
    [InlineData("--graceful-kill-timeout", "100", "graceful_kill_timeout is 100 s, not more than run.stop_grace_seconds + checkpoints.final_commit_wait_seconds = 123 s")]
    [InlineData("--builds-dir", "/elsewhere", "builds_dir is /elsewhere, but the executor mounts builds at [builds].container_dir = /builds")]
    [InlineData("--cache-dir", "/tmp/cache", "cache_dir is /tmp/cache, but the executor mounts the cache at [cache].container_dir = /cache")]
    public async Task A_runner_that_would_disagree_with_the_config_is_refused_with_the_reason_and_nothing_is_registered(string option, string value, string reason)
    {
        using var workspace = new ExecutorWorkspace();

        var (exitCode, stdout, stderr) = await RegisterAsync(workspace, option, value);

        Assert.Equal(2, exitCode);
        Assert.Contains("refusing to register runner 'gpu-host-07'", stderr);
        Assert.Contains(reason, stderr);
        Assert.Contains("fix: ", stderr);
        Assert.False(File.Exists(Path.Combine(workspace.Root, "argv.txt")), stdout);
        Assert.False(File.Exists(Path.Combine(workspace.Root, "template.toml")));
    }

    [Fact]
    public async Task Without_a_token_it_refuses_unless_asked_for_a_dry_run_which_prints_the_command_without_it()
    {
        using var workspace = new ExecutorWorkspace();
        var (refusedExit, _, refused) = await workspace.CallVerbAsync(new Dictionary<string, string?> { ["RUNNER_TOKEN"] = null },
            "register", "--url", "https://gitlab.example.com", "--name", "dry");
        Assert.Equal(2, refusedExit);
        Assert.Contains("no runner token: put the runner authentication token", refused);

        var (exitCode, stdout, stderr) = await workspace.CallVerbAsync(new Dictionary<string, string?> { ["RUNNER_TOKEN"] = null },
            "register", "--url", "https://gitlab.example.com", "--name", "dry", "--dry-run");
        Assert.True(exitCode == 0, stderr);
        Assert.Contains("CI_SERVER_TOKEN=\"$RUNNER_TOKEN\" gitlab-runner register --non-interactive --url https://gitlab.example.com --executor custom --name dry --template-config ", stdout);
        Assert.Contains("gpu-executor --config /etc/gpu-executor/l4.toml register", stdout);
    }
}

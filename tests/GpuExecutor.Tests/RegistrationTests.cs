using GpuExecutor.Configuration;
using GpuExecutor.Outcomes;
using GpuExecutor.Registration;

namespace GpuExecutor.Tests;

public sealed class RegistrationTests
{
    private static readonly ExecutorConfig Config = ConfigLoader.Parse("[run]\nstop_grace_seconds = 30\n[checkpoints]\nfinal_commit_wait_seconds = 120\n", "test.toml");

    private static RegistrationRequest Request(long? graceful = null, string? builds = null, string name = "gpu-01", params string[] tags) =>
        new(new Uri("https://gitlab.example.com"), name, tags, "/etc/gpu-executor/config.toml", "/usr/bin/gpu-executor", builds, null, graceful);

    [Fact]
    public void The_template_round_trips_through_the_runner_config_parser_and_agrees_with_the_config()
    {
        var entry = RunnerRegistration.TemplateEntry(Request(), Config);
        var toml = RunnerRegistration.TemplateToml(entry);

        var parsed = Assert.Single(RunnerEntry.ParseFile(toml, "template.toml"));

        Assert.Equal(("custom", "/builds", "/cache", 600L, 10L), (parsed.Executor, parsed.BuildsDir, parsed.CacheDir, parsed.GracefulKillTimeout, parsed.ForceKillTimeout));
        Assert.Equal("/etc/gpu-executor/config.toml", parsed.ExecutorConfigPath);
        Assert.Empty(parsed.DisagreementsWith(Config));
        Assert.True(parsed.Runs("/usr/local/bin/gpu-executor"));
    }

    [Fact]
    public void A_job_log_budget_past_the_runners_default_output_limit_gets_one_in_the_template_and_an_entry_without_it_is_refused()
    {
        var config = ConfigLoader.Parse("[run]\nstop_grace_seconds = 30\n[checkpoints]\nfinal_commit_wait_seconds = 120\n[logs]\njob_log_budget = \"16m\"\n", "test.toml");
        Assert.Null(RunnerRegistration.TemplateEntry(Request(), Config).OutputLimitKiB);

        var entry = RunnerRegistration.TemplateEntry(Request(), config);
        var parsed = Assert.Single(RunnerEntry.ParseFile(RunnerRegistration.TemplateToml(entry), "template.toml"));
        Assert.Equal(16 * 1024 + 256 + 1, parsed.OutputLimitKiB);
        Assert.Empty(parsed.DisagreementsWith(config));

        var withoutLimit = parsed with { OutputLimitKiB = null };
        var (problem, fix) = Assert.Single(withoutLimit.DisagreementsWith(config));
        Assert.Contains("output_limit is 4096 KiB (the runner's default), but logs.job_log_budget is 16384 KiB", problem);
        Assert.Contains("set output_limit = 16641", fix);
    }

    [Fact]
    public void Strings_with_quotes_and_backslashes_are_escaped_in_the_template()
    {
        var request = Request() with { ExecutorConfigPath = "/etc/gpu \"exec\"\\cfg.toml" };
        var entry = RunnerRegistration.TemplateEntry(request, Config);
        var parsed = Assert.Single(RunnerEntry.ParseFile(RunnerRegistration.TemplateToml(entry), "template.toml"));
        Assert.Equal("/etc/gpu \"exec\"\\cfg.toml", parsed.ExecutorConfigPath);
    }

    [Fact]
    public void A_graceful_kill_timeout_not_above_the_stop_grace_and_the_final_commit_wait_is_refused_with_the_fix()
    {
        var error = Assert.Throws<SystemFailureException>(() => RunnerRegistration.TemplateEntry(Request(graceful: 150), Config));
        Assert.Contains("graceful_kill_timeout is 150 s, not more than run.stop_grace_seconds + checkpoints.final_commit_wait_seconds = 150 s", error.Message);
        Assert.Contains("graceful_kill_timeout = 210", error.Message);
        // The executor config says what the runner's timeout is: a runner that differs is refused too.
        var differs = Assert.Throws<SystemFailureException>(() => RunnerRegistration.TemplateEntry(Request(graceful: 900), Config));
        Assert.Contains("run.runner_graceful_kill_timeout_seconds is 600, the runner's graceful_kill_timeout 900", differs.Message);
        var agreeing = ConfigLoader.Parse("[run]\nrunner_graceful_kill_timeout_seconds = 900\n", "test.toml");
        Assert.Equal(900L, RunnerRegistration.TemplateEntry(Request(graceful: 900), agreeing).GracefulKillTimeout);
    }

    [Theory]
    [InlineData("bad tag")]
    [InlineData("tag;rm")]
    [InlineData("")]
    public void A_tag_that_is_not_a_tag_is_refused(string tag)
    {
        var error = Assert.Throws<SystemFailureException>(() => RunnerRegistration.TemplateEntry(Request(tags: tag), Config));
        Assert.Contains("is not a tag", error.Message);
    }

    [Fact]
    public void The_register_arguments_carry_no_token_and_tags_only_for_a_legacy_registration_token()
    {
        var request = Request(tags: ["a100-x8", "nvlink"]);
        var modern = RunnerRegistration.RegisterArguments(request, "/etc/gpu-executor/t.toml", authenticationToken: true);
        var legacy = RunnerRegistration.RegisterArguments(request, "/etc/gpu-executor/t.toml", authenticationToken: false);

        Assert.Equal(["register", "--non-interactive", "--url", "https://gitlab.example.com", "--executor", "custom", "--name", "gpu-01", "--template-config", "/etc/gpu-executor/t.toml"], modern);
        Assert.Equal([.. modern, "--tag-list", "a100-x8,nvlink"], legacy);
        Assert.True(RunnerRegistration.IsAuthenticationToken("glrt-abc"));
        Assert.False(RunnerRegistration.IsAuthenticationToken("GR1348941abc"));
    }

    [Fact]
    public void A_runner_config_entry_that_disagrees_says_each_problem_and_its_fix()
    {
        var entries = RunnerEntry.ParseFile("""
            concurrent = 2
            [[runners]]
              name = "a"
              executor = "custom"
              builds_dir = "/other-builds"
              [runners.custom]
                config_exec = "/usr/bin/gpu-executor"
                config_args = ["--config", "/etc/gpu-executor/a.toml", "config"]
                prepare_exec = "/usr/bin/gpu-executor"
                prepare_args = ["--config", "/etc/gpu-executor/b.toml", "prepare"]
                run_exec = "/usr/bin/gpu-executor"
                run_args = ["--config", "/etc/gpu-executor/a.toml"]
                graceful_kill_timeout = 100
            [[runners]]
              name = "docker-one"
              executor = "docker"
            """, "config.toml");

        Assert.Equal(2, entries.Count);
        Assert.False(entries[1].Runs("/usr/bin/gpu-executor"));
        var problems = entries[0].DisagreementsWith(Config).Select(problem => problem.Problem).ToList();
        Assert.Contains(problems, problem => problem.StartsWith("builds_dir is /other-builds", StringComparison.Ordinal));
        Assert.Contains("custom.prepare_args names the config /etc/gpu-executor/b.toml, the config stage /etc/gpu-executor/a.toml", problems);
        Assert.Contains("custom.run_args does not end with the verb \"run\"", problems);
        Assert.Contains("custom.cleanup_exec is missing", problems);
        Assert.Contains(problems, problem => problem.StartsWith("graceful_kill_timeout is 100 s", StringComparison.Ordinal));

        Assert.Throws<SystemFailureException>(() => RunnerEntry.ParseFile("[[runners]]\n[runners.custom]\nconfig_args = \"not an array\"\n", "bad.toml"));
        Assert.Throws<SystemFailureException>(() => RunnerEntry.ParseFile("runners = 3\n", "bad.toml"));
    }
}

using System.Text.Json;
using GpuExecutor.Doctor;
using GpuExecutor.Tests;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// `doctor` on the test bed: the real dockerd and s3rver, a fake nvidia-smi (recorded output,
/// as nowhere here has a GPU), the fake GitLab, and a runner config written by `register`.
/// </summary>
public sealed class DoctorTests
{
    private const string IdleGpus = "0, GPU-d0000000-0000-0000-0000-000000000000, NVIDIA L4, 23034, 0, 0, [N/A]\n1, GPU-d0000000-0000-0000-0000-000000000001, NVIDIA L4, 23034, 3, 0, [N/A]\n";
    private const string Topology = "\tGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\nGPU0\t X \tPHB\t0-15\t0\nGPU1\tPHB\t X \t0-15\t0\n";
    private const string ContinuationToken = "glpat-doctor-token-5521";

    /// <summary>A host as the test bed makes it: every link in place.</summary>
    private static async Task<ExecutorWorkspace> HealthyHostAsync(FakeGitLab gitLab, string gpus = IdleGpus, string? dockerEndpoint = null, string accessKey = "S3RVER", string? stateDir = null)
    {
        var bucket = $"doctor-{Guid.NewGuid():N}"[..24];
        using (var client = S3Testbed.Client())
            await S3Testbed.CreateBucketAsync(client, bucket);
        var workspace = new ExecutorWorkspace(dockerEndpoint: dockerEndpoint, extraConfig: $"""
            [checkpoints]
            store = "s3"
            bucket = "{bucket}"
            [continuation]
            gitlab_url = "{gitLab.Url}"
            token = "{ContinuationToken}"
            {S3Testbed.StoreConfig("s3", S3Testbed.Endpoint, $"\"{bucket}\"").Replace("access_key_id = \"S3RVER\"", $"access_key_id = \"{accessKey}\"", StringComparison.Ordinal)}
            """);
        var fake = workspace.WriteFakeNvidiaSmi(gpus, Topology);
        File.AppendAllText(workspace.ConfigPath, $"\n[gpus]\nmode = \"none\"\nnvidia_smi = \"{fake}\"\n");
        if (stateDir is not null)
            File.WriteAllText(workspace.ConfigPath, File.ReadAllText(workspace.ConfigPath).Replace($"state_dir = \"{workspace.Root}/state\"", $"state_dir = \"{stateDir}\"", StringComparison.Ordinal));
        return workspace;
    }

    /// <summary>GitLab Runner's config.toml with one entry, its runner side written by `register --dry-run`.</summary>
    private static async Task<string> RunnerConfigAsync(ExecutorWorkspace workspace, string? gracefulKillTimeout = null)
    {
        var template = Path.Combine(workspace.Root, "runner.template.toml");
        var (exitCode, stdout, stderr) = await workspace.CallVerbAsync(new Dictionary<string, string?>(), "register", "--url", "https://gitlab.example.com", "--name", "doctor-host", "--template", template, "--dry-run");
        Assert.True(exitCode == 0, stdout + stderr);
        var entry = File.ReadAllText(template).Replace("[[runners]]\n", "[[runners]]\n  name = \"doctor-host\"\n  url = \"https://gitlab.example.com\"\n  token = \"glrt-not-used\"\n", StringComparison.Ordinal);
        if (gracefulKillTimeout is not null)
            entry = entry.Replace("graceful_kill_timeout = 600", $"graceful_kill_timeout = {gracefulKillTimeout}", StringComparison.Ordinal);
        var path = Path.Combine(workspace.Root, "gitlab-runner-config.toml");
        File.WriteAllText(path, "concurrent = 4\ncheck_interval = 0\n\n" + entry);
        return path;
    }

    private static async Task<(int ExitCode, string Output)> DoctorAsync(ExecutorWorkspace workspace, params string[] options)
    {
        var (exitCode, stdout, stderr) = await workspace.CallVerbAsync(new Dictionary<string, string?>(), ["doctor", .. options]);
        return (exitCode, stdout + stderr);
    }

    /// <summary>The line of a check, and the fix line under it.</summary>
    private static (string Line, string? Fix) Check(string output, string status, string check)
    {
        var lines = output.Split('\n');
        var index = Array.FindIndex(lines, line => line.StartsWith($"{status} {check,-28} ", StringComparison.Ordinal));
        Assert.True(index >= 0, $"no '{status} {check}' line in:\n{output}");
        var fix = index + 1 < lines.Length && lines[index + 1].TrimStart().StartsWith("fix: ", StringComparison.Ordinal) ? lines[index + 1].Trim() : null;
        return (lines[index], fix);
    }

    [Fact]
    public async Task On_the_test_bed_every_check_passes_or_warns_with_a_reason_and_json_says_the_same()
    {
        using var gitLab = new FakeGitLab(ContinuationToken);
        using var workspace = await HealthyHostAsync(gitLab);
        var runnerConfig = await RunnerConfigAsync(workspace);

        var (exitCode, output) = await DoctorAsync(workspace, "--runner-config", runnerConfig);

        Assert.True(exitCode == 0, output);
        Assert.DoesNotContain("FAIL ", output);
        foreach (var check in new[] { "config", "docker", "docker live-restore", "gpus", "gpus busy", "state_dir", "dataset cache", "checkpoint work", "store s3", "clock", "gitlab", "runner doctor-host" })
            Check(output, "PASS ", check);
        Assert.Contains("(user gpu-bot)", Check(output, "PASS ", "gitlab").Line);
        Assert.Matches(@"PASS  checkpoint store \(s3\) +wrote, read back and deleted", output);
        foreach (var warning in output.Split('\n').Where(line => line.StartsWith("WARN ", StringComparison.Ordinal)))
            Assert.NotNull(Check(output, "WARN ", warning[6..].Split("  ")[0].Trim()).Fix);
        Assert.DoesNotContain(ContinuationToken, output);

        var (jsonExit, json) = await DoctorAsync(workspace, "--runner-config", runnerConfig, "--json");
        Assert.Equal(0, jsonExit);
        var findings = JsonSerializer.Deserialize(json, DoctorJsonContext.Default.ListDoctorFinding)!;
        Assert.Equal(output.Split('\n').Count(line => line.StartsWith("PASS ", StringComparison.Ordinal) || line.StartsWith("WARN ", StringComparison.Ordinal)), findings.Count);
        Assert.All(findings, finding => Assert.True(finding.Status == DoctorStatus.Pass || finding.Fix is not null, finding.ToString()));
    }

    [Fact]
    public async Task A_stopped_dockerd_fails_the_docker_check_with_the_fix()
    {
        using var gitLab = new FakeGitLab(ContinuationToken);
        // A stopped dockerd leaves no one listening on its socket: the path names no daemon.
        using var workspace = await HealthyHostAsync(gitLab, dockerEndpoint: $"unix://{Path.GetTempPath()}gpu-executor-no-daemon-{Guid.NewGuid():N}.sock");

        var (exitCode, output) = await DoctorAsync(workspace);

        Assert.True(exitCode == 3, output);
        var (line, fix) = Check(output, "FAIL ", "docker");
        Assert.Contains("cannot be reached", line);
        Assert.Contains("start dockerd", fix);
        Assert.Contains("1 failed.", output);
    }

    [Fact]
    public async Task Wrong_store_credentials_fail_the_store_and_the_checkpoint_probe_with_the_fix()
    {
        using var gitLab = new FakeGitLab(ContinuationToken);
        // s3rver checks the access key id (not the SigV4 signature): an unknown key is what wrong credentials look like to it.
        using var workspace = await HealthyHostAsync(gitLab, accessKey: "NOT-A-KEY-OF-THIS-STORE");

        var (exitCode, output) = await DoctorAsync(workspace);

        Assert.True(exitCode == 3, output);
        var (store, storeFix) = Check(output, "FAIL ", "store s3");
        Assert.Contains("InvalidAccessKeyId", store);
        Assert.Contains("access_key_id and secret_access_key", storeFix);
        var (probe, probeFix) = Check(output, "FAIL ", "checkpoint store (s3)");
        Assert.Contains("write/read/delete probe", probe);
        Assert.Contains("read, write and delete", probeFix);
        Assert.DoesNotContain("not-checked-by-s3rver", output);
    }

    [Fact]
    public async Task A_metrics_textfile_dir_that_node_exporter_never_made_fails_with_the_fix_and_passes_once_it_exists()
    {
        using var gitLab = new FakeGitLab(ContinuationToken);
        using var workspace = await HealthyHostAsync(gitLab);
        var textfiles = Path.Combine(workspace.Root, "node-exporter");
        File.AppendAllText(workspace.ConfigPath, $"\n[metrics]\ntextfile_dir = \"{textfiles}\"\n");

        var (exitCode, output) = await DoctorAsync(workspace);
        Assert.True(exitCode == 3, output);
        var (line, fix) = Check(output, "FAIL ", "metrics.textfile_dir");
        Assert.Contains("does not exist", line);
        Assert.Contains("prometheus-node-exporter", fix);

        Directory.CreateDirectory(textfiles);
        (exitCode, output) = await DoctorAsync(workspace);
        Assert.True(exitCode == 0, output);
        Check(output, "PASS ", "metrics.textfile_dir");
    }

    [Fact]
    public async Task An_unwritable_state_dir_fails_with_the_fix()
    {
        using var gitLab = new FakeGitLab(ContinuationToken);
        // Root writes anywhere a mode allows: a state_dir below a regular file is one no user can create.
        var blocker = Path.GetTempFileName();
        try
        {
            using var workspace = await HealthyHostAsync(gitLab, stateDir: Path.Combine(blocker, "state"));

            var (exitCode, output) = await DoctorAsync(workspace);

            Assert.True(exitCode == 3, output);
            var (line, fix) = Check(output, "FAIL ", "state_dir");
            Assert.Contains("is not writable", line);
            Assert.Contains("install -d -m 0750", fix);
            Check(output, "FAIL ", "checkpoint work");
        }
        finally
        {
            File.Delete(blocker);
        }
    }

    [Fact]
    public async Task A_runner_whose_graceful_kill_timeout_is_too_short_fails_with_the_fix()
    {
        using var gitLab = new FakeGitLab(ContinuationToken);
        using var workspace = await HealthyHostAsync(gitLab);
        // stop_grace_seconds 3 + final_commit_wait_seconds 120: 60 s would SIGKILL the executor first.
        var runnerConfig = await RunnerConfigAsync(workspace, gracefulKillTimeout: "60");

        var (exitCode, output) = await DoctorAsync(workspace, "--runner-config", runnerConfig);

        Assert.True(exitCode == 3, output);
        var (line, fix) = Check(output, "FAIL ", "runner doctor-host");
        Assert.Contains("graceful_kill_timeout is 60 s", line);
        Assert.Contains("graceful_kill_timeout = 183", fix);
    }

    [Fact]
    public async Task A_pool_gpu_busy_outside_any_job_fails_with_the_fix()
    {
        using var gitLab = new FakeGitLab(ContinuationToken);
        // nvidia-smi's recorded answer for a host where something outside any job holds 5 GiB of GPU 1.
        var busy = IdleGpus.Replace("23034, 3, 0", "23034, 5120, 97", StringComparison.Ordinal);
        using var workspace = await HealthyHostAsync(gitLab, gpus: busy);

        var (exitCode, output) = await DoctorAsync(workspace);

        Assert.True(exitCode == 3, output);
        var (line, fix) = Check(output, "FAIL ", "gpus busy");
        Assert.Contains("GPU 1 (5120 MiB in use)", line);
        Assert.DoesNotContain("GPU 0", line);
        Assert.Contains("nvidia-smi --query-compute-apps", fix);
    }
}

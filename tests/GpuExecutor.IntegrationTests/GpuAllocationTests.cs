using System.Globalization;
using System.Text.Json;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// GPU allocation on the real daemon, with a fake nvidia-smi reporting a 2-GPU host and
/// gpus.mode = "none" (Docker here has no nvidia runtime): assignment, labels and environment
/// are real, only the device request is left out.
/// </summary>
public sealed class GpuAllocationTests
{
    private const string Gpu0 = "GPU-f0000000-0000-0000-0000-000000000000";
    private const string Gpu1 = "GPU-f0000000-0000-0000-0000-000000000001";

    private static readonly string TwoGpuQuery =
        $"0, {Gpu0}, NVIDIA L4, 23034, 0, 0, [N/A]\n1, {Gpu1}, NVIDIA L4, 23034, 0, 0, [N/A]\n";

    private const string TwoGpuTopology = "\tGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\nGPU0\t X \tPHB\t0-15\t0\nGPU1\tPHB\t X \t0-15\t0\n";

    private static ExecutorWorkspace TwoGpuHost(string mode = "none", string extraConfig = "")
    {
        var workspace = new ExecutorWorkspace(gpus: "", extraConfig: extraConfig);
        var fake = workspace.WriteFakeNvidiaSmi(TwoGpuQuery, TwoGpuTopology);
        File.AppendAllText(workspace.ConfigPath, $"mode = \"{mode}\"\nnvidia_smi = \"{fake}\"\ndefault_count = 1\nwait_timeout_seconds = 300\n");
        return workspace;
    }

    [Fact]
    public async Task Six_jobs_wanting_one_gpu_each_on_a_two_gpu_host_never_share_one_and_all_finish()
    {
        using var workspace = TwoGpuHost();
        long[] jobIds = [7501, 7502, 7503, 7504, 7505, 7506];

        // Watch the ledger from outside while the jobs run: no UUID may be on two containers.
        using var watching = new CancellationTokenSource();
        var samples = new List<string[]>();
        var sampler = Task.Run(async () =>
        {
            while (!watching.IsCancellationRequested)
            {
                var labels = await Testbed.DockerAsync("ps", "-a", "--filter", "label=io.gpu-executor.gpus", "--format", "{{.Label \"io.gpu-executor.gpus\"}}");
                samples.Add(labels.Split('\n', StringSplitOptions.RemoveEmptyEntries));
                await Task.Delay(100, CancellationToken.None);
            }
        }, TestContext.Current.CancellationToken);

        var runs = await Task.WhenAll(jobIds.Select(jobId => workspace.SimulateAsync(new
        {
            job_id = jobId,
            image = Testbed.TestImage,
            variables = new Dictionary<string, string> { ["GPU_COUNT"] = "1" },
            script = new[]
            {
                "echo \"$NVIDIA_VISIBLE_DEVICES $CUDA_VISIBLE_DEVICES\" > gpu.txt",
                "echo \"$EPOCHREALTIME\" > start.txt",
                "sleep 1",
                "echo \"$EPOCHREALTIME\" > end.txt",
            },
        })));
        await watching.CancelAsync();
        await sampler;

        Assert.All(runs, run => Assert.Equal("success", run.Result.Outcome));
        Assert.Contains(runs, run => run.Log.Contains("Waiting for 1 GPU", StringComparison.Ordinal));
        Assert.NotEmpty(samples);
        Assert.All(samples, sample => Assert.Equal(sample.Length, sample.Distinct().Count()));

        var holds = jobIds.Select(jobId =>
        {
            var directory = workspace.ProjectDirOnHost(jobId);
            var devices = File.ReadAllText(Path.Combine(directory, "gpu.txt")).Trim().Split(' ');
            Assert.Equal(devices[0], devices[1]);
            return (Gpu: devices[0],
                Start: double.Parse(File.ReadAllText(Path.Combine(directory, "start.txt")), CultureInfo.InvariantCulture),
                End: double.Parse(File.ReadAllText(Path.Combine(directory, "end.txt")), CultureInfo.InvariantCulture));
        }).ToList();
        Assert.All(holds, hold => Assert.Contains(hold.Gpu, new[] { Gpu0, Gpu1 }));
        foreach (var group in holds.GroupBy(hold => hold.Gpu))
        {
            var ordered = group.OrderBy(hold => hold.Start).ToList();
            for (var index = 1; index < ordered.Count; index++)
                Assert.True(ordered[index].Start >= ordered[index - 1].End, $"two jobs used {group.Key} at once");
        }
    }

    [Theory]
    [InlineData("GPU_COUNT", "3", "asks for 3 GPUs, but this runner has 2 (2 × NVIDIA L4)")]
    [InlineData("GPU_MODEL", "H100", "asks for GPU model 'H100' (GPU_MODEL), but this runner has only 2 × NVIDIA L4")]
    [InlineData("GPU_MIN_MEMORY", "40G", "only 0 of this runner's GPUs qualify (the largest has 23034 MiB")]
    [InlineData("GPU_COUNT", "-1", "GPU_COUNT '-1' is not a number of GPUs")]
    [InlineData("GPU_COUNT", "1e9", "GPU_COUNT '1e9' is not a number of GPUs")]
    [InlineData("GPU_MIN_MEMORY", "abc", "GPU_MIN_MEMORY 'abc' is not an amount of GPU memory")]
    public async Task Requests_that_can_never_be_met_or_are_malformed_fail_at_once_as_build_failures(string key, string value, string message)
    {
        using var workspace = TwoGpuHost();

        var run = await workspace.SimulateAsync(new
        {
            image = Testbed.TestImage,
            variables = new Dictionary<string, string> { [key] = value },
            script = new[] { "true" },
        });

        Assert.Equal("failed", run.Result.Outcome);
        Assert.Equal(1, run.Result.PrepareAttempts);
        Assert.Contains(message, run.Log);
        Assert.DoesNotContain("Waiting for", run.Log);
    }

    [Fact]
    public async Task The_gpus_verb_lists_the_inventory_and_links_even_with_docker_down_and_says_it_is_incomplete()
    {
        using var workspace = new ExecutorWorkspace(dockerEndpoint: "unix:///nonexistent/docker.sock", gpus: "");
        var fake = workspace.WriteFakeNvidiaSmi(TwoGpuQuery, TwoGpuTopology);
        File.AppendAllText(workspace.ConfigPath, $"mode = \"none\"\nnvidia_smi = \"{fake}\"\n");

        var listing = await workspace.CallVerbAsync(new Dictionary<string, string?>(), "gpus", "--links");

        Assert.Equal(2, listing.ExitCode);
        Assert.Equal(2, listing.Stdout.Split('\n').Count(line => line.Contains("holder unknown (no ledger), memory free", StringComparison.Ordinal)));
        Assert.Contains("GPU0  X      PHB", listing.Stdout);
        Assert.Contains("could not read which jobs hold the GPUs", listing.Stderr);
    }

    [Fact]
    public async Task A_job_killed_hard_frees_its_gpus_once_its_container_is_removed()
    {
        using var workspace = TwoGpuHost();
        const long crashedJob = 7601;
        var crashed = workspace.RunnerEnvironment(workspace.WritePayload(crashedJob, new Dictionary<string, string> { ["GPU_COUNT"] = "2" }));
        // Prepared, then its executor and runner vanish: nobody calls cleanup.
        Assert.Equal(0, (await workspace.CallVerbAsync(crashed, "prepare")).ExitCode);
        var listing = await workspace.CallVerbAsync(new Dictionary<string, string?>(), "gpus");
        Assert.Equal(0, listing.ExitCode);
        Assert.Equal(2, listing.Stdout.Split('\n').Count(line => line.Contains($"job {crashedJob} (project 3) since", StringComparison.Ordinal)));

        var waitingForGpus = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var waiting = workspace.SimulateAsync(new
        {
            job_id = 7602L,
            image = Testbed.TestImage,
            variables = new Dictionary<string, string> { ["GPU_COUNT"] = "1" },
            script = new[] { "echo \"got $NVIDIA_VISIBLE_DEVICES\"" },
        }, line =>
        {
            if (line.StartsWith("Waiting for", StringComparison.Ordinal))
                waitingForGpus.TrySetResult();
        });
        // The second job says it waits for the GPUs the crashed job holds, and has no container yet.
        await Task.WhenAny(waitingForGpus.Task, waiting, Task.Delay(TimeSpan.FromSeconds(60), TestContext.Current.CancellationToken));
        Assert.True(waitingForGpus.Task.IsCompleted, "the second job never said it waits for GPUs");
        Assert.False(waiting.IsCompleted, "the second job ran although both GPUs were held");
        Assert.Empty((await Testbed.JobContainersAsync(7602)).Trim());

        // What cleanup (or gc, once the deadline passed) does for the crashed job.
        Assert.Equal(0, (await workspace.CallVerbAsync(crashed, "cleanup")).ExitCode);
        var run = await waiting;

        Assert.Equal("success", run.Result.Outcome);
        Assert.Contains($"held by job {crashedJob} (project 3)", run.Log);
        Assert.Contains("got GPU-f0000000-0000-0000-0000-00000000000", run.Log);
    }

    [Fact]
    public async Task In_nvidia_mode_the_container_carries_a_device_request_for_exactly_its_gpus()
    {
        using var workspace = TwoGpuHost(mode: "nvidia");
        const long jobId = 7701;
        var environment = workspace.RunnerEnvironment(workspace.WritePayload(jobId, new Dictionary<string, string> { ["GPU_COUNT"] = "1" }));
        try
        {
            var prepare = await workspace.CallVerbAsync(environment, "prepare");

            // No nvidia runtime here: the container is created, its start is refused.
            Assert.Equal(2, prepare.ExitCode);
            Assert.Contains("could not select device driver", prepare.Stderr);
            var inspected = await Testbed.DockerAsync("inspect", "--format", "{{json .HostConfig.DeviceRequests}}|{{json .Config.Env}}|{{index .Config.Labels \"io.gpu-executor.gpus\"}}", $"gpu-executor-{jobId}-job");
            var parts = inspected.Trim().Split('|');
            using var requests = JsonDocument.Parse(parts[0]);
            var request = Assert.Single(requests.RootElement.EnumerateArray());
            Assert.Equal("nvidia", request.GetProperty("Driver").GetString());
            Assert.Equal([Gpu0], request.GetProperty("DeviceIDs").EnumerateArray().Select(id => id.GetString()));
            Assert.Equal("gpu", request.GetProperty("Capabilities")[0][0].GetString());
            Assert.Contains($"\"NVIDIA_VISIBLE_DEVICES={Gpu0}\"", parts[1]);
            Assert.Equal(Gpu0, parts[2]);
        }
        finally
        {
            await workspace.CallVerbAsync(environment, "cleanup");
        }
        Assert.Equal("", await Testbed.JobContainersAsync(jobId));
    }

    [Fact]
    public async Task A_job_with_datasets_and_gpus_gets_both_and_fetches_while_the_gpus_are_busy()
    {
        var storeRoot = Directory.CreateTempSubdirectory("file-store").FullName;
        Directory.CreateDirectory(Path.Combine(storeRoot, "corpus", "text"));
        File.WriteAllText(Path.Combine(storeRoot, "corpus", "text", "a.txt"), "alpha\n");
        using var workspace = TwoGpuHost(extraConfig: $"\n[stores.local]\ntype = \"file\"\nroot = \"{storeRoot}\"\nallow = [\"corpus\"]\n");
        var holder = workspace.RunnerEnvironment(workspace.WritePayload(7901, new Dictionary<string, string> { ["GPU_COUNT"] = "2" }));
        Assert.Equal(0, (await workspace.CallVerbAsync(holder, "prepare")).ExitCode);
        try
        {
            var waiting = workspace.SimulateAsync(new
            {
                job_id = 7902L,
                image = Testbed.TestImage,
                variables = new Dictionary<string, string> { ["GPU_COUNT"] = "1", ["DATASETS"] = "local://corpus/text/ -> /data/text" },
                script = new[] { "echo \"$NVIDIA_VISIBLE_DEVICES $(cat /data/text/a.txt)\" > got.txt" },
            });
            // While both GPUs are held, the dataset already arrives in the job's view.
            var view = Path.Combine(workspace.Root, "state", "datasets", "views", "job-7902", "0", "a.txt");
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (!File.Exists(view) && DateTime.UtcNow < deadline)
                await Task.Delay(100, TestContext.Current.CancellationToken);
            Assert.True(File.Exists(view), "the dataset did not arrive while the job waited for GPUs");
            Assert.False(waiting.IsCompleted);

            Assert.Equal(0, (await workspace.CallVerbAsync(holder, "cleanup")).ExitCode);
            var run = await waiting;

            Assert.Equal("success", run.Result.Outcome);
            var got = File.ReadAllText(Path.Combine(workspace.ProjectDirOnHost(7902), "got.txt")).Trim().Split(' ');
            Assert.Contains(got[0], new[] { Gpu0, Gpu1 });
            Assert.Equal("alpha", got[1]);
        }
        finally
        {
            await workspace.CallVerbAsync(holder, "cleanup");
            Directory.Delete(storeRoot, recursive: true);
        }
    }
}

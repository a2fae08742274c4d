using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// A trainer that prints 50 MiB, past any runner's output_limit, through the simulator on the
/// test bed: the job log stays under logs.job_log_budget and keeps every line that matters, and
/// the whole output is kept, byte for byte, on the host and in the store.
/// </summary>
public sealed partial class FullLogTests
{
    private const long Budget = 1L << 20;

    /// <summary>524,288 lines of 100 bytes (50 MiB); every 2,621st is an epoch's loss line, 200 in all.</summary>
    private const string Trainer = """awk 'BEGIN { for (i = 1; i <= 524288; i++) { if (i % 2621 == 0) printf "epoch %03d loss %.6f %s\n", i / 2621, 1 / i, "                                                                           "; else printf "step %010d %083d\n", i, 0 } }' | tee "$CI_PROJECT_DIR/printed.txt" """;

    [GeneratedRegex(@"^\u001b\[32;1m\$ [^\n]*\n", RegexOptions.Multiline)]
    private static partial Regex CommandEcho();

    [Fact]
    public async Task A_50_MiB_trainer_keeps_the_job_log_under_its_budget_with_every_loss_line_and_its_whole_output_on_the_host_and_in_the_store()
    {
        using var workspace = new ExecutorWorkspace(extraConfig: $"[logs]\njob_log_budget = {Budget}\n");
        const long jobId = 8901;

        var simulation = await workspace.SimulateAsync(new
        {
            job_id = jobId,
            variables = new Dictionary<string, string> { ["CHECKPOINTS"] = "on", ["CHECKPOINT_RUN_KEY"] = "loud-run" },
            script = new[] { Trainer.Trim() },
        });

        Assert.True(simulation.Result.Outcome == "success", simulation.Log[^Math.Min(simulation.Log.Length, 4000)..]);
        var printed = await File.ReadAllBytesAsync(Path.Combine(workspace.ProjectDirOnHost(jobId), "printed.txt"), TestContext.Current.CancellationToken);
        Assert.Equal(50L << 20, printed.Length);

        // The job log: under the budget (with the other stages' few lines), every loss line in it.
        Assert.True(simulation.Log.Length < Budget + 32 * 1024, $"the job log is {simulation.Log.Length} bytes");
        var lossLines = Encoding.ASCII.GetString(printed).Split('\n').Where(line => line.StartsWith("epoch ", StringComparison.Ordinal)).ToList();
        Assert.Equal(200, lossLines.Count);
        Assert.All(lossLines, line => Assert.Contains(line + "\n", simulation.Log));
        Assert.Contains("gpu-executor: the job log has shown", simulation.Log);
        var summary = simulation.Log.Split('\n').FirstOrDefault(line => line.Contains("Whole log of build_script", StringComparison.Ordinal)) ?? "";
        Assert.Matches(@"^Whole log of build_script: 50\.0 MiB, 524,28\d lines; the job log showed [\d.]+ KiB and held back [\d,]+ lines", summary);
        Assert.Contains($"`gpu-executor logs {jobId}` on host", simulation.Log);
        Assert.Contains($"the store keeps it as runs/p1-loud-run/logs/{jobId:D12}.log.gz", simulation.Log);

        // `logs JOB` on the host, and `logs RUN` from the store: what the trainer printed, after
        // the runner's echo of the command.
        foreach (var target in new[] { jobId.ToString(System.Globalization.CultureInfo.InvariantCulture), "p1-loud-run" })
        {
            var output = await LogsAsync(workspace, target);
            var echo = CommandEcho().Match(Encoding.UTF8.GetString(output, 0, Math.Min(output.Length, 64 * 1024)));
            Assert.True(echo.Success && echo.Index == 0, $"logs {target} does not start with the command's echo");
            Assert.True(output.AsSpan(Encoding.UTF8.GetByteCount(echo.Value)).SequenceEqual(printed), $"logs {target}: {output.Length} bytes, not the echo and the {printed.Length} printed");
        }

        // The executor's memory stayed flat: the run call that streamed 50 MiB peaked where a quiet one does.
        var events = await workspace.CallVerbAsync(new Dictionary<string, string?>(), "events", "--job", jobId.ToString(System.Globalization.CultureInfo.InvariantCulture), "--json");
        var peaks = events.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => JsonDocument.Parse(line).RootElement)
            .Where(line => line.GetProperty("verb").GetString() == "run")
            .ToDictionary(line => line.GetProperty("stage").GetString()!, line => line.GetProperty("peak_rss_kib").GetInt64());
        var loud = peaks["build_script"];
        var quiet = peaks.Where(pair => pair.Key != "build_script").Max(pair => pair.Value);
        var report = $"peak RSS of the run verb: build_script (50 MiB of output) {loud} KiB; the job's quiet stages at most {quiet} KiB";
        // For the record (the issue asks for the figure): beside the published binary.
        var reports = Directory.CreateDirectory(Path.Combine(Testbed.RepositoryRoot, "artifacts", "test-reports")).FullName;
        await File.WriteAllTextAsync(Path.Combine(reports, "full-log-peak-rss.txt"), report + "\n", TestContext.Current.CancellationToken);
        Assert.True(loud < quiet + 32 * 1024, report);
    }

    [Fact]
    public async Task Logs_follow_prints_a_step_while_it_runs_and_ends_with_it()
    {
        using var workspace = new ExecutorWorkspace();
        const long jobId = 8902;
        var job = workspace.SimulateAsync(new
        {
            job_id = jobId,
            script = new[] { "for i in 1 2 3 4 5 6; do echo \"line $i\"; sleep 1; done" },
        });
        var live = Path.Combine(workspace.Root, "state", "job-logs", $"job-{jobId}", "01-build_script.log");
        var giveUp = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!(File.Exists(live) && (await File.ReadAllTextAsync(live, TestContext.Current.CancellationToken)).Contains("line 1", StringComparison.Ordinal)))
        {
            Assert.True(DateTime.UtcNow < giveUp, "the step's live log never showed its first line");
            await Task.Delay(100, TestContext.Current.CancellationToken);
        }

        var clock = System.Diagnostics.Stopwatch.StartNew();
        var followed = Encoding.UTF8.GetString(await LogsAsync(workspace, jobId.ToString(System.Globalization.CultureInfo.InvariantCulture), "--follow"));
        var simulation = await job;

        Assert.True(simulation.Result.Outcome == "success", simulation.Log);
        // It followed the step to its end (it started with one line printed, five seconds before).
        Assert.True(clock.Elapsed > TimeSpan.FromSeconds(3), $"--follow returned after {clock.Elapsed}");
        Assert.EndsWith("line 1\nline 2\nline 3\nline 4\nline 5\nline 6\n", followed);
        Assert.False(File.Exists(live));
    }

    private static async Task<byte[]> LogsAsync(ExecutorWorkspace workspace, string target, string option = "")
    {
        // Bytes, not text: Testbed.RunAsync decodes; the log is compared byte for byte.
        var output = Path.Combine(workspace.Root, $"logs-{target}.out");
        var (exitCode, _, stderr) = await Testbed.RunAsync("/bin/bash", ["-c", "exec \"$0\" --config \"$1\" logs \"$2\" $4 > \"$3\"", Testbed.Binary, workspace.ConfigPath, target, output, option], null, workspace.Root, TimeSpan.FromMinutes(2));
        Assert.True(exitCode == 0, stderr);
        return await File.ReadAllBytesAsync(output, TestContext.Current.CancellationToken);
    }
}

using System.IO.Compression;
using System.Text;
using GpuExecutor.Configuration;
using GpuExecutor.JobLog;

namespace GpuExecutor.Tests;

public sealed class StepOutputLogTests : IDisposable
{
    private readonly string _stateDir = Directory.CreateTempSubdirectory("gpu-executor-steplog").FullName;

    public void Dispose() => Directory.Delete(_stateDir, recursive: true);

    private sealed class ManualClock : TimeProvider
    {
        public DateTimeOffset Now { get; set; } = new(2026, 12, 1, 10, 0, 0, TimeSpan.Zero);

        public override DateTimeOffset GetUtcNow() => Now;
    }

    private static string Unzip(string path)
    {
        using var gzip = new GZipStream(File.OpenRead(path), CompressionMode.Decompress);
        using var text = new StreamReader(gzip, Encoding.UTF8);
        return text.ReadToEnd();
    }

    private static LogSettings Budget(long bytes, int oneIn = 100) => new() { JobLogBudgetBytes = bytes, SampleOneIn = oneIn };

    [Fact]
    public async Task Under_the_budget_the_job_log_gets_everything_and_the_whole_log_is_kept_compressed()
    {
        var jobLog = new MemoryStream();
        var errors = new MemoryStream();
        await using var step = StepOutputLog.Start(Budget(1 << 20), _stateDir, 5, "step_script", jobLog, errors, "`gpu-executor logs 5`");
        await step.Stdout.WriteAsync("epoch 1\nhalf a li"u8.ToArray(), TestContext.Current.CancellationToken);
        await step.Stderr.WriteAsync("warning: x\n"u8.ToArray(), TestContext.Current.CancellationToken);
        await step.Stdout.WriteAsync("ne\n"u8.ToArray(), TestContext.Current.CancellationToken);
        Assert.True(File.Exists(step.LivePath));

        var summary = await step.FinishAsync();

        Assert.Equal("epoch 1\nhalf a line\n", Encoding.UTF8.GetString(jobLog.ToArray()));
        Assert.Equal("warning: x\n", Encoding.UTF8.GetString(errors.ToArray()));
        Assert.Equal("epoch 1\nhalf a liwarning: x\nne\n", Unzip(summary.Path));
        Assert.Equal((31L, 3L, 0L), (summary.Bytes, summary.Lines, summary.HeldBackLines));
        Assert.False(File.Exists(step.LivePath));
        Assert.Equal(Path.Combine(StepLogFiles.DirectoryOf(_stateDir, 5), "01-step_script.log.gz"), summary.Path);
    }

    [Fact]
    public async Task Past_the_budget_the_job_log_gets_every_matching_line_one_in_n_and_a_cut_long_line_and_stays_under_it()
    {
        const long budget = 64 * 1024;
        var jobLog = new MemoryStream();
        var printed = new StringBuilder();
        await using (var step = StepOutputLog.Start(Budget(budget, oneIn: 50), _stateDir, 6, "step_script", jobLog, Stream.Null, "`gpu-executor logs 6`"))
        {
            for (var line = 1; line <= 20_000; line++)
            {
                var text = line % 1000 == 0 ? $"Epoch {line / 1000}: loss {1.0 / line:0.000000}\n" : $"step {line:D8} " + new string('.', 60) + "\n";
                printed.Append(text);
                await step.Stdout.WriteAsync(Encoding.UTF8.GetBytes(text), TestContext.Current.CancellationToken);
            }
            var longLine = "Traceback: " + new string('x', 10_000) + "\n";
            printed.Append(longLine);
            await step.Stdout.WriteAsync(Encoding.UTF8.GetBytes(longLine), TestContext.Current.CancellationToken);
            var summary = await step.FinishAsync();
            Assert.Equal(printed.ToString(), Unzip(summary.Path));
            Assert.True(summary.HeldBackLines > 15_000, summary.ToString());
            Assert.Equal(summary.ShownBytes, jobLog.Length);
        }

        var shown = Encoding.UTF8.GetString(jobLog.ToArray());
        Assert.True(jobLog.Length <= budget, $"{jobLog.Length} bytes shown");
        for (var epoch = 1; epoch <= 20; epoch++)
            Assert.Contains($"Epoch {epoch}: loss", shown);
        Assert.Contains("gpu-executor: the job log has shown", shown);
        Assert.Contains("the whole log: `gpu-executor logs 6`", shown);
        // The traceback's first 4 KiB, and how much was cut.
        Assert.Contains("Traceback: xxxx", shown);
        Assert.Contains($"[gpu-executor: {10_012 - StepOutputLog.LinePrefixBytes} more bytes of this line cut]", shown);
        // Past the live part, sampled lines are whole and one in 50.
        var afterLive = shown[shown.IndexOf("gpu-executor: the job log has shown", StringComparison.Ordinal)..];
        var sampled = afterLive.Split('\n').Count(line => line.StartsWith("step ", StringComparison.Ordinal));
        Assert.InRange(sampled, 1, 20_000 / 50);
        Assert.All(shown.Split('\n').Where(line => line.StartsWith("step ", StringComparison.Ordinal)), line => Assert.Equal(74, line.Length));
    }

    [Fact]
    public async Task Held_back_lines_are_announced_every_interval_and_the_budget_is_the_jobs_across_steps()
    {
        var clock = new ManualClock();
        var settings = Budget(64 * 1024, oneIn: 1_000_000) with { HeldBackNoticeInterval = TimeSpan.FromMinutes(5) };
        var first = new MemoryStream();
        await using (var step = StepOutputLog.Start(settings, _stateDir, 7, "step_script", first, Stream.Null, "here", clock))
        {
            var filler = Encoding.UTF8.GetBytes(new string('a', 99) + "\n");
            for (var line = 0; line < 600; line++)
                await step.Stdout.WriteAsync(filler, TestContext.Current.CancellationToken);
            clock.Now += TimeSpan.FromMinutes(6);
            for (var line = 0; line < 200; line++)
                await step.Stdout.WriteAsync(filler, TestContext.Current.CancellationToken);
            await step.FinishAsync();
        }
        var shown = Encoding.UTF8.GetString(first.ToArray());
        Assert.Contains("lines (", shown);
        Assert.Contains("held back so far; the whole log: here.", shown);

        // The next step starts where this one left the budget: past the live part already.
        var second = new MemoryStream();
        await using (var step = StepOutputLog.Start(settings, _stateDir, 7, "step_release", second, Stream.Null, "here", clock))
        {
            await step.Stdout.WriteAsync("plain line\n"u8.ToArray(), TestContext.Current.CancellationToken);
            var summary = await step.FinishAsync();
            Assert.Equal(1, summary.HeldBackLines);
            Assert.EndsWith("02-step_release.log.gz", summary.Path);
        }
        Assert.DoesNotContain("plain line", Encoding.UTF8.GetString(second.ToArray()));
    }

    [Fact]
    public async Task A_disk_that_fails_the_host_file_never_stops_the_step_or_its_job_log()
    {
        // /dev/full: every write fails with ENOSPC, as a full state_dir would. The link is the
        // job's second step's file, as it counts as the first.
        var directory = Directory.CreateDirectory(StepLogFiles.DirectoryOf(_stateDir, 8)).FullName;
        File.CreateSymbolicLink(Path.Combine(directory, "02-step_script.log"), "/dev/full");
        var jobLog = new MemoryStream();
        await using var step = StepOutputLog.Start(Budget(1 << 20), _stateDir, 8, "step_script", jobLog, Stream.Null, "here");
        await step.Stdout.WriteAsync("epoch 1\n"u8.ToArray(), TestContext.Current.CancellationToken);
        await step.Stdout.WriteAsync("epoch 2\n"u8.ToArray(), TestContext.Current.CancellationToken);

        var summary = await step.FinishAsync();

        Assert.Equal("epoch 1\nepoch 2\n", Encoding.UTF8.GetString(jobLog.ToArray()));
        Assert.Contains("the host file stopped after 0 B", summary.Incomplete);
        Assert.Equal((16L, 2L), (summary.Bytes, summary.Lines));
    }
}

using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.Gpus;
using GpuExecutor.HostFiles;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;
using GpuExecutor.Telemetry;
using GpuExecutor.Clocks;

namespace GpuExecutor.Workflows;

/// <summary>
/// `gpus sample JOB`: the job's GPU sampler, a detached process that prepare starts once the job
/// holds GPUs. It belongs to the job's container, not to a stage: `run` may restart or a later
/// job adopt the training, and the samples go on. Every interval it asks nvidia-smi once for
/// the job's GPUs and appends a line per GPU to the job's samples file. It ends when the job's
/// container is gone, when the job's deadline plus gc's grace has passed, or when Docker has not
/// answered for checkpoints.agent_daemon_lost_seconds: it never outlives the job by much.
/// </summary>
public sealed class GpuSampler(ExecutorConfig config, IContainerDriver driver, IGpuInventory gpus, Action<string> log)
{
    public async Task RunAsync(long jobId, CancellationToken stop)
    {
        var interval = config.Telemetry.GpuSampleInterval;
        if (interval <= TimeSpan.Zero)
            return;
        Directory.CreateDirectory(GpuTelemetryFiles.DirectoryOf(config.StateDir, jobId));
        using var held = HostLock.TryAcquire(GpuTelemetryFiles.SamplerLock(config.StateDir, jobId), create: true);
        if (held is null)
        {
            log("another sampler already records this job's GPUs; this one leaves.");
            return;
        }

        var path = GpuTelemetryFiles.SamplesFile(config.StateDir, jobId);
        using var file = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read | FileShare.Delete);
        using var writer = new StreamWriter(file) { AutoFlush = true };
        if (file.Length == 0)
            writer.WriteLine(GpuSample.CsvHeader);

        IReadOnlyList<string>? uuids = null;
        HostDeadline? deadline = null;
        TimeSpan? unanswered = null;
        log($"sampling every {interval.TotalSeconds:0} s into {path}");
        while (!stop.IsCancellationRequested)
        {
            var now = Monotonic.Now;
            try
            {
                var container = (await driver.FindAsync(JobLabels.SelectJob(jobId), stop))
                    .FirstOrDefault(found => found.Labels.GetValueOrDefault(JobLabels.Role) == JobContainerNames.JobRole);
                if (container is null)
                {
                    log("the job's container is gone: sampling ends.");
                    return;
                }
                uuids ??= container.Labels.GetValueOrDefault(JobLabels.Gpus, "").Split(',', StringSplitOptions.RemoveEmptyEntries);
                deadline ??= JobLabels.ReadHostDeadline(container.Labels);
                unanswered = null;
            }
            catch (SystemFailureException error)
            {
                unanswered ??= now;
                if (now - unanswered > config.Checkpoints.AgentDaemonLost)
                {
                    log($"Docker has not answered for {(now - unanswered.Value).TotalSeconds:0} s (checkpoints.agent_daemon_lost_seconds): sampling ends. Last error: {error.Message}");
                    return;
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            if (uuids is { Count: 0 })
            {
                log("the job holds no GPU: nothing to sample.");
                return;
            }
            if (deadline is { } end && DateTimeOffset.UtcNow > end.Current + config.Cleanup.GcGracePeriod)
            {
                log("the job's deadline and gc's grace have passed: sampling ends.");
                return;
            }
            if (uuids is not null)
            {
                try
                {
                    foreach (var sample in await gpus.SampleAsync(uuids, stop))
                        writer.WriteLine(sample.ToCsv());
                    // The host's metrics carry each held GPU's last sample.
                    await new HostMetricsTextfile(config, driver).TryWriteAsync();
                }
                catch (SystemFailureException error)
                {
                    // One missed sample is a gap in the record, not a reason to stop recording.
                    log($"a sample failed: {error.Message}");
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    return;
                }
            }
            try
            {
                await Task.Delay(interval, stop);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }
}

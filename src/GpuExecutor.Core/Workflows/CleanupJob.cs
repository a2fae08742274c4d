using GpuExecutor.Checkpoints;
using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.Datasets;
using GpuExecutor.Jobs;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;

namespace GpuExecutor.Workflows;

/// <summary>
/// `cleanup`: waits for a `run` of the job still in its stop sequence, then removes the job's
/// containers by label, its dataset views and its builds directory. It runs on its own timeout,
/// not the job's (the runner calls it after cancel and timeout too), treats not-found as done,
/// and one failed removal does not stop the others. Its exit code never changes the job's status.
/// </summary>
public sealed class CleanupJob(ExecutorConfig config, IContainerDriver driver, TextWriter log)
{
    /// <summary>Beyond its grace period and final-commit wait, what `run` may need to end (the kill's reply, the last log lines).</summary>
    private static readonly TimeSpan RunEndSlack = TimeSpan.FromSeconds(15);

    /// <summary>Throws <see cref="SystemFailureException"/> listing what was left undone (gc retries it).</summary>
    public async Task RunAsync(JobIdentity job)
    {
        var failures = new List<string>();
        // A job that adopted another job's training (re-attach) owns what that job left: its
        // containers, views and builds directory, which its own cleanup never came to remove.
        var adopted = Reattach.ReadAdoption(config.StateDir, job.JobId);
        var jobIds = adopted is null ? [job.JobId] : new[] { job.JobId, adopted.JobId };
        // On a job timeout the runner calls cleanup while `run` may still be in its stop sequence
        // or final commit: removing the container now would cut a trainer's last save short.
        var runMayTake = config.Run.StopGracePeriod + config.Checkpoints.FinalCommitWait + RunEndSlack;
        foreach (var jobId in jobIds)
            await RunLease.WaitUntilReleasedAsync(config.StateDir, jobId, runMayTake, log.WriteLine);

        using var timeout = new CancellationTokenSource(config.Cleanup.Timeout);
        await RemoveContainersAsync(jobIds, failures, timeout.Token);
        try
        {
            // The views' hardlinks are what keep cached objects from eviction; the job is done.
            var cache = new DatasetCache(config.StateDir, _ => { });
            foreach (var jobId in jobIds)
                cache.RemoveViews(jobId);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            failures.Add($"dataset views: {error.Message}");
        }

        foreach (var jobId in config.Cleanup.RemoveBuildsDir ? jobIds : [])
        {
            var buildsDir = JobWorkspace.For(config, job with { JobId = jobId }).BuildsHostDir;
            try
            {
                if (Directory.Exists(buildsDir))
                    Directory.Delete(buildsDir, recursive: true);
            }
            catch (Exception error) when (error is IOException or UnauthorizedAccessException)
            {
                failures.Add($"builds directory {buildsDir}: {error.Message}");
            }
        }
        if (adopted is not null && failures.Count == 0)
            File.Delete(Reattach.AdoptionFile(config.StateDir, job.JobId));

        if (failures.Count > 0)
            throw new SystemFailureException($"cleanup of job {job.JobId} left work undone (gc will retry): {string.Join("; ", failures)}");
    }

    private async Task RemoveContainersAsync(IReadOnlyList<long> jobIds, List<string> failures, CancellationToken cancellationToken)
    {
        try
        {
            var containers = new List<ContainerSummary>();
            foreach (var jobId in jobIds)
                containers.AddRange(await driver.FindAsync(JobLabels.SelectJob(jobId), cancellationToken));
            var removals = containers.Select(async container =>
            {
                try
                {
                    await driver.RemoveAsync(container.Id, cancellationToken);
                    log.WriteLine($"Removed {container.Name}.");
                }
                catch (Exception error) when (error is ContainerEngineException or OperationCanceledException)
                {
                    lock (failures)
                        failures.Add($"{container.Name}: {error.Message}");
                }
            });
            await Task.WhenAll(removals);
        }
        catch (Exception error) when (error is ContainerEngineException or OperationCanceledException)
        {
            failures.Add(error.Message);
        }
    }
}

using GpuExecutor.Gpus;
using GpuExecutor.Outcomes;
using GpuExecutor.Workflows;

namespace GpuExecutor.Verbs;

/// <summary>`metrics`: rewrites the host's Prometheus textfile now (the package's timer calls it), or prints it.</summary>
public static class MetricsVerb
{
    public static async Task RunAsync(VerbContext context, bool print, TextWriter stdout)
    {
        var config = context.Config;
        // The free GPUs are known from prepare's last look; a host that has run no job since the
        // pool changed learns it here. Without nvidia-smi, the record stays as it was.
        try
        {
            using var bounded = CancellationTokenSource.CreateLinkedTokenSource(context.Stop);
            bounded.CancelAfter(HostMetricsTextfile.DockerWait);
            var inventory = await context.Adapters.Gpus.QueryAsync(bounded.Token);
            GpuPoolRecord.Write(config.StateDir, GpuAllocator.InPool(config.Gpus, inventory));
        }
        catch (Exception error) when (error is SystemFailureException or OperationCanceledException && !context.Stop.IsCancellationRequested)
        {
        }
        var textfile = context.Adapters.Metrics;
        if (print)
        {
            await stdout.WriteAsync(await textfile.RenderAsync(DateTimeOffset.UtcNow, context.Stop));
            return;
        }
        if (config.Metrics.TextfileDir is null)
        {
            // The timer calls this on every host the package is on: metrics off is no failure.
            context.Log.WriteLine("metrics are off: set [metrics] textfile_dir to write them (see `gpu-executor metrics --print`).");
            return;
        }
        if (await textfile.WriteAsync(context.Stop) is { } why)
            throw new SystemFailureException(why);
    }
}

using GpuExecutor.Workflows;

namespace GpuExecutor.Verbs;

/// <summary>`gc`: removes what jobs whose runner died left behind, through <see cref="CollectGarbage"/>.</summary>
public static class GcVerb
{
    /// <param name="onlyJob">`--job`: a job id, or null for every job.</param>
    public static async Task RunAsync(VerbContext context, string? onlyJob, TextWriter stdout)
    {
        long? jobId = null;
        if (onlyJob is not null)
        {
            if (!long.TryParse(onlyJob, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var parsed) || parsed <= 0)
                throw new GpuExecutor.Outcomes.UsageException($"gc --job: '{GpuExecutor.JobLog.Printable.Of(onlyJob, 40)}' is not a job id (a positive number).");
            jobId = parsed;
        }
        await new CollectGarbage(context.Config, context.Adapters.Containers).RunAsync(stdout, context.Stop, jobId);
    }
}
